package org.ktedge.demo.core

import com.google.gson.JsonArray
import com.google.gson.JsonObject
import kotlin.math.max
import kotlin.math.min

/** One face a detector found, in photo pixels: box x0, y0, x1, y1; keypoints (x, y) in the
 * detector's order (BlazeFace: the subject's right eye, left eye, nose tip, mouth, right and left
 * ear tragion); score in [0, 1]. */
class Face(val box: DoubleArray, val score: Double, val keypoints: List<DoubleArray>) {
    val rightEye: DoubleArray get() = keypoints[0]
    val leftEye: DoubleArray get() = keypoints[1]

    fun toJson() = JsonObject().apply {
        add("box", JsonArray().also { a -> box.forEach { a.add(it) } })
        addProperty("score", score)
        add("keypoints", JsonArray().also { a -> keypoints.forEach { p -> a.add(JsonArray().also { q -> p.forEach { q.add(it) } }) } })
    }
}

/** (2, 3) affine matrices, row-major [a, b, tx, c, d, ty]: (x, y) -> (a x + b y + tx, c x + d y + ty). */
object Geometry {
    fun map(m: DoubleArray, x: Double, y: Double) = doubleArrayOf(m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5])
}

/**
 * A detector artifact (an `anchor_detections` output: one row per anchor, box x0, y0, x1, y1, the
 * keypoints' x, y, then the score, relative to its input) on a whole frame, as ktedge's
 * model/blazeface.py does it: the frame letterboxed to the input, MediaPipe's score threshold and
 * weighted non-max suppression (a test holds the two equal on the real detector's outputs).
 */
object Detect {
    const val MIN_SCORE = 0.5  // model/blazeface.py MIN_SCORE
    const val NMS_IOU = 0.3    // model/blazeface.py NMS_IOU

    /** The (2, 3) input -> photo matrix that fits the whole frame, aspect kept, centred, in a
     * `size` square (MediaPipe's keep_aspect_ratio letterbox; model/blazeface.py letterbox_matrix). */
    fun letterbox(width: Int, height: Int, size: Int): DoubleArray {
        val side = max(width, height).toDouble()
        val s = side / size
        return doubleArrayOf(s, 0.0, (width - side) / 2, 0.0, s, (height - side) / 2)
    }

    /** The detector's input for a whole frame, and its input -> photo matrix. */
    fun input(image: ArgbImage, detector: Manifest): Pair<ModelInput, DoubleArray> {
        val size = detector.preprocessing.cropSize
        val m = letterbox(image.width, image.height, size)
        return Pair(Preprocess.modelInput(Align.warpToInput(image, m, size), detector), m)
    }

    /** An `anchor_detections` output (anchors x `values`, relative) -> the faces in photo pixels. */
    fun faces(v: DoubleArray, values: Int, toPhoto: DoubleArray, size: Int): List<Face> {
        val score = values - 1
        var order = List(v.size / values) { v.copyOfRange(it * values, (it + 1) * values) }
            .filter { it[score] >= MIN_SCORE }.sortedByDescending { it[score] }  // stable, as torch's argsort
        val faces = ArrayList<Face>()
        while (order.isNotEmpty()) {  // weighted NMS: the best one's score, its cluster's weighted mean
            val best = order[0]
            val (members, rest) = order.partition { iou(best, it) > NMS_IOU }
            if (members.isEmpty()) break  // an empty best box overlaps nothing, itself included
            val weight = members.sumByDouble { it[score] }
            val mean = DoubleArray(score) { j -> members.sumByDouble { it[j] * it[score] } / weight }
            fun pixel(i: Int) = Geometry.map(toPhoto, mean[i] * size, mean[i + 1] * size)
            faces.add(Face(pixel(0) + pixel(2), best[score], List((score - 4) / 2) { pixel(4 + 2 * it) }))
            order = rest
        }
        return faces
    }

    /** A detector's decoded answers -> its faces. */
    fun found(answers: Map<String, Answer>): List<Face> =
        answers.values.filterIsInstance<Answer.Faces>().firstOrNull()?.faces
            ?: throw ManifestError("not a detector's answers (no anchor_detections output)")

    private fun iou(a: DoubleArray, b: DoubleArray): Double {
        val inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        val union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return if (union > 0) inter / union else 0.0
    }
}
