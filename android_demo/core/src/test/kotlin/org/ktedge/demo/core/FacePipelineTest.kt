package org.ktedge.demo.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Test

/** The frame path's glue: which inputs each model is given and how its answers come back to the
 * photo. The runtimes cannot run on the desktop JVM; each runner here returns what a detector or a
 * landmark model would, and records what it was fed. The steps themselves are held to ktedge's
 * Python on real artifacts by tests/test_android_core.py. */
class FacePipelineTest {

    private fun manifest(model: String, crop: Int, outputs: String, alignment: String = "") = Manifest.parse("""
        {"schema": "ktedge.manifest/3", "model": "$model", "format": "tflite", "precision": "fp32", "variant": "xnnpack",
         "file": "model.tflite", "size_bytes": 1, "sha256": "${"0".repeat(64)}",
         "input": {"name": "image", "shape": [1, $crop, $crop, 3], "dtype": "float32", "layout": "NHWC", "quantization": null},
         "preprocessing": {"crop_size": $crop, "colour_order": "RGB", "mean": [0, 0, 0], "std": [1, 1, 1]$alignment},
         "outputs": [$outputs]}
    """.trimIndent())

    // Two keypoints (the eyes) per anchor: box, 2 x (x, y), score.
    private val detector = manifest("blazeface", 4,
        """{"name": "detections", "shape": [1, 2, 9], "dtype": "float32", "quantization": null, "kind": "anchor_detections"}""")
    private val landmarks = manifest("kt", 8,
        """{"name": "eyes", "shape": [1, 2, 2], "dtype": "float32", "quantization": null, "kind": "points_xy"}""",
        """, "alignment": {"rule": "eyes_level", "size": 8, "eye_distance": 0.5, "eye_centre": [0.5, 0.4]}""")
    private val image = ArgbImage(40, 20, IntArray(800) { 0xff808080.toInt() })
    // One face (eyes at 0.3, 0.35 and 0.45, 0.35 of the letterboxed input), one anchor under the threshold.
    private val anchors = floatArrayOf(0.25f, 0.25f, 0.5f, 0.5f, 0.3f, 0.35f, 0.45f, 0.35f, 0.9f,
        0f, 0f, 1f, 1f, 0.5f, 0.5f, 0.6f, 0.5f, 0.1f)
    // A landmark model that answers the eyes where the alignment rule put them.
    private val eyesWhereAligned = listOf(floatArrayOf(0.25f, 0.4f, 0.75f, 0.4f))

    @Test
    fun aModelWithAnAlignmentRuleRunsOnEachFaceTheDetectorFinds() {
        val fed = ArrayList<ModelInput>()
        val detectorFed = ArrayList<ModelInput>()
        val pipeline = FacePipeline(landmarks, { fed.add(it); eyesWhereAligned }, detector, { detectorFed.add(it); listOf(anchors) })
        val frame = pipeline.frame(image)
        assertEquals(1, detectorFed.size)
        assertArrayEquals(intArrayOf(1, 4, 4, 3), detectorFed[0].shape)
        assertEquals(1, frame.faces.size)
        assertArrayEquals(intArrayOf(1, 8, 8, 3), fed.single().shape)
        val found = frame.faces[0].face!!
        // The letterbox puts the 40 x 20 frame in a 40 px square 10 px above it: eyes at (12, 4), (18, 4).
        assertArrayEquals(doubleArrayOf(12.0, 4.0), found.rightEye, 1e-5)
        val eyes = (frame.faces[0].answers["eyes"] as Answer.Points).xy
        assertArrayEquals(found.rightEye, eyes[0], 1e-5)
        assertArrayEquals(found.leftEye, eyes[1], 1e-5)
        assertEquals(true, frame.detectorMs != null && frame.modelMs >= 0)
    }

    @Test
    fun noFaceMeansTheModelDoesNotRun() {
        var runs = 0
        val empty = FloatArray(18)
        val frame = FacePipeline(landmarks, { runs++; eyesWhereAligned }, detector, { listOf(empty) }).frame(image)
        assertEquals(0, frame.faces.size)
        assertEquals(0, runs)
    }

    @Test
    fun withoutADetectorTheModelSeesTheCentredSquareAndADetectorAloneAnswersItsFaces() {
        val centred = FacePipeline(landmarks, { eyesWhereAligned }).frame(image)
        assertArrayEquals(Crop(10, 0, 20).toPhoto(8), centred.faces.single().toPhoto, 1e-12)
        assertNull(centred.detectorMs)
        val alone = FacePipeline(detector, { listOf(anchors) }).frame(image)
        val faces = (alone.faces.single().answers["detections"] as Answer.Faces).faces
        assertArrayEquals(doubleArrayOf(10.0, 0.0, 20.0, 10.0), faces.single().box, 1e-5)
    }
}
