package org.ktedge.demo.core

import com.google.gson.JsonArray
import com.google.gson.JsonElement
import com.google.gson.JsonObject
import com.google.gson.JsonPrimitive
import kotlin.math.max
import kotlin.math.sqrt

/** A decoded output, in the original image's pixels where it is geometry. */
sealed class Answer {
    /** Points (x, y) in image pixels. */
    class Points(val xy: List<DoubleArray>) : Answer()
    /** x1, y1, x2, y2 in image pixels. */
    class Box(val xyxy: DoubleArray) : Answer()
    class Probabilities(val byLabel: LinkedHashMap<String, Double>) : Answer()
    class Value(val value: Double) : Answer()
    /** The labels whose logit is > 0. */
    class Present(val labels: List<String>) : Answer()
    class ClassLabel(val label: String) : Answer()
    class Embedding(val unit: DoubleArray) : Answer()
    /** A detector's faces, after its threshold and non-max suppression. */
    class Faces(val faces: List<Face>) : Answer()

    fun toJson(): JsonElement = when (this) {
        is Points -> JsonArray().also { a -> xy.forEach { p -> a.add(numbers(p)) } }
        is Box -> numbers(xyxy)
        is Probabilities -> JsonObject().also { o -> byLabel.forEach { (k, v) -> o.addProperty(k, v) } }
        is Value -> JsonPrimitive(value)
        is Present -> JsonArray().also { a -> labels.forEach { a.add(it) } }
        is ClassLabel -> JsonPrimitive(label)
        is Embedding -> numbers(unit)
        is Faces -> JsonArray().also { a -> faces.forEach { a.add(it.toJson()) } }
    }

    private fun numbers(values: DoubleArray) = JsonArray().also { a -> values.forEach { a.add(it) } }
}

/**
 * Output tensors -> answers, by each output's `kind` in the manifest (as export/preprocess.py
 * decode). `toPhoto` is the (2, 3) matrix, row-major, taking model-input pixels to photo pixels:
 * `Crop.toPhoto` for the centred crop, `Align.cropToPhoto` for a detected face, `Detect.letterbox`
 * for a detector's whole frame.
 */
object Decode {

    /** `outputs`: dequantized values, in manifest order. */
    fun decode(outputs: List<FloatArray>, manifest: Manifest, toPhoto: DoubleArray): LinkedHashMap<String, Answer> {
        manifest.checkOutputs(outputs.map { it.size })
        val size = manifest.preprocessing.cropSize
        fun pixel(fx: Double, fy: Double) = Geometry.map(toPhoto, fx * size, fy * size)
        val answers = LinkedHashMap<String, Answer>()
        for ((values, spec) in outputs.zip(manifest.outputs)) {
            val v = DoubleArray(values.size) { values[it].toDouble() }
            answers[spec.name] = when (spec.kind) {
                "points_xy" -> Answer.Points(List(v.size / 2) { i -> pixel(v[2 * i], v[2 * i + 1]) })
                "points_x_then_y" -> Answer.Points(List(v.size / 2) { i -> pixel(v[i], v[v.size / 2 + i]) })
                "points_xyz" -> Answer.Points(List(v.size / 3) { i -> pixel(v[3 * i], v[3 * i + 1]) })
                "box_offsets" -> {  // MTCNN: offsets of the crop's own box, in units of its side
                    val corners = listOf(pixel(v[0], v[1]), pixel(1 + v[2], v[1]), pixel(1 + v[2], 1 + v[3]), pixel(v[0], 1 + v[3]))
                    val xs = corners.map { it[0] }
                    val ys = corners.map { it[1] }
                    Answer.Box(doubleArrayOf(xs.min()!!, ys.min()!!, xs.max()!!, ys.max()!!))
                }
                "probabilities" -> Answer.Probabilities(LinkedHashMap(labels(spec, v.size).zip(v.toList()).toMap()))
                "value" -> Answer.Value(v[0])
                "multilabel_logits" -> Answer.Present(labels(spec, v.size).filterIndexed { i, _ -> v[i] > 0 })
                "class_logits" -> Answer.ClassLabel(labels(spec, v.size)[argmax(v)])
                "embedding" -> {
                    var squares = 0.0
                    for (x in v) squares += x * x
                    val norm = max(sqrt(squares), 1e-12)
                    Answer.Embedding(DoubleArray(v.size) { v[it] / norm })
                }
                "anchor_detections" -> Answer.Faces(Detect.faces(v, spec.shape.last(), toPhoto, size))
                else -> throw ManifestError("output ${spec.name}: unknown kind ${spec.kind}")
            }
        }
        return answers
    }

    private fun argmax(v: DoubleArray): Int {
        var best = 0
        for (i in v.indices) if (v[i] > v[best]) best = i
        return best
    }

    private fun labels(spec: OutputSpec, n: Int): List<String> =
        if (spec.labels.size == n) spec.labels else List(n) { it.toString() }
}
