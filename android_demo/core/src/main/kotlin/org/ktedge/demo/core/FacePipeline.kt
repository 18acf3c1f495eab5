package org.ktedge.demo.core

/** A model's input tensor -> its dequantized outputs, in manifest order (a loaded runtime). */
typealias Runner = (ModelInput) -> List<FloatArray>

/** One input the model ran on: where it lay in the photo (input -> photo matrix), the detector's
 * face it was aligned to (null for the centred square or a detector's own frame), the answers. */
class FaceAnswers(val toPhoto: DoubleArray, val face: Face?, val answers: Map<String, Answer>)

/** A frame's answers; the model's time summed over its faces, the detector's time (null: none ran). */
class FrameAnswers(val faces: List<FaceAnswers>, val modelMs: Double, val detectorMs: Double?)

/**
 * Photo -> faces -> model, the way `ktedge predict` does it (export/predict.py): a detector
 * artifact alone answers the faces of the letterboxed frame; a model whose manifest states an
 * alignment runs on each face the detector finds, aligned by that rule; a model without one, or
 * without a detector, sees the centred square. The one frame path of the app's screen and of its
 * benchmark mode.
 */
class FacePipeline(
    private val manifest: Manifest, private val run: Runner,
    private val detector: Manifest? = null, private val runDetector: Runner? = null
) {
    init {
        require((detector == null) == (runDetector == null)) { "a detector needs both its manifest and its runner" }
        if (detector != null && !detector.isDetector) throw ManifestError("${detector.model}: not a detector (no anchor_detections output)")
    }

    /** Whether a frame goes through the detector first. */
    val detects: Boolean get() = detector != null && manifest.preprocessing.alignment != null && !manifest.isDetector

    fun frame(image: ArgbImage): FrameAnswers {
        if (manifest.isDetector) {
            val (input, m) = Detect.input(image, manifest)
            val (outputs, ms) = timed { run(input) }
            return FrameAnswers(listOf(FaceAnswers(m, null, Decode.decode(outputs, manifest, m))), ms, null)
        }
        if (!detects) {
            val size = manifest.preprocessing.cropSize
            val (hwc, crop) = Preprocess.faceCrop(image, size)
            val (outputs, ms) = timed { run(Preprocess.modelInput(hwc, manifest)) }
            val m = crop.toPhoto(size)
            return FrameAnswers(listOf(FaceAnswers(m, null, Decode.decode(outputs, manifest, m))), ms, null)
        }
        val (frame, toFrame) = Detect.input(image, detector!!)
        val (found, detectorMs) = timed { runDetector!!(frame) }
        var modelMs = 0.0
        val faces = Detect.found(Decode.decode(found, detector, toFrame)).map { face ->
            val (input, m) = Align.input(image, face, manifest)
            val (outputs, ms) = timed { run(input) }
            modelMs += ms
            FaceAnswers(m, face, Decode.decode(outputs, manifest, m))
        }
        return FrameAnswers(faces, modelMs, detectorMs)
    }

    private inline fun <T> timed(block: () -> T): Pair<T, Double> {
        val start = System.nanoTime()
        val value = block()
        return Pair(value, (System.nanoTime() - start) / 1e6)
    }
}
