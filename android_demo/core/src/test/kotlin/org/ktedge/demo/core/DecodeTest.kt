package org.ktedge.demo.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Test

class DecodeTest {

    private fun manifest(outputs: String) = Manifest.parse(
        Manifests.int8Nhwc().replace(Regex("\"outputs\": \\[.*?\\}\\]", RegexOption.DOT_MATCHES_ALL), "\"outputs\": [$outputs]")
    )

    @Test
    fun pointsAndBoxesLandInImagePixels() {
        val m = manifest("""
            {"name": "box", "shape": [1, 4], "dtype": "float32", "quantization": null, "kind": "box_offsets", "decode": ""},
            {"name": "p5", "shape": [1, 4], "dtype": "float32", "quantization": null, "kind": "points_x_then_y", "decode": ""},
            {"name": "p68", "shape": [1, 2, 2], "dtype": "float32", "quantization": null, "kind": "points_xy", "decode": ""},
            {"name": "mesh", "shape": [1, 2, 3], "dtype": "float32", "quantization": null, "kind": "points_xyz", "decode": ""}
        """)
        val crop = Crop(20, 10, 100)
        val a = Decode.decode(listOf(floatArrayOf(0.1f, 0f, -0.1f, 0f), floatArrayOf(0.25f, 0.75f, 0.5f, 0.5f),
            floatArrayOf(0.25f, 0.5f, 0.75f, 0.5f), floatArrayOf(0.25f, 0.5f, -0.1f, 0.75f, 0.5f, 0.2f)), m,
            crop.toPhoto(m.preprocessing.cropSize))
        assertArrayEquals(doubleArrayOf(30.0, 10.0, 110.0, 110.0), (a["box"] as Answer.Box).xyxy, 1e-5)
        val p5 = (a["p5"] as Answer.Points).xy
        assertArrayEquals(doubleArrayOf(45.0, 60.0), p5[0], 1e-5) // x1 = 0.25, y1 = 0.5
        assertArrayEquals(doubleArrayOf(95.0, 60.0), p5[1], 1e-5)
        val p68 = (a["p68"] as Answer.Points).xy
        assertArrayEquals(doubleArrayOf(45.0, 60.0), p68[0], 1e-5) // (x, y) pairs
        assertArrayEquals(doubleArrayOf(95.0, 60.0), p68[1], 1e-5)
        val mesh = (a["mesh"] as Answer.Points).xy
        assertArrayEquals(doubleArrayOf(45.0, 60.0), mesh[0], 1e-5) // (x, y, z) triples, z dropped
        assertArrayEquals(doubleArrayOf(95.0, 60.0), mesh[1], 1e-5)
    }

    @Test
    fun classesAttributesValuesAndEmbeddings() {
        val m = manifest("""
            {"name": "face", "shape": [1, 2], "dtype": "float32", "quantization": null, "kind": "probabilities", "labels": ["not face", "face"], "decode": ""},
            {"name": "attrs", "shape": [1, 3], "dtype": "float32", "quantization": null, "kind": "multilabel_logits", "labels": ["smile", "glasses", "beard"], "decode": ""},
            {"name": "expr", "shape": [1, 3], "dtype": "float32", "quantization": null, "kind": "class_logits", "labels": ["neutral", "happy", "sad"], "decode": ""},
            {"name": "age", "shape": [1], "dtype": "float32", "quantization": null, "kind": "value", "decode": ""},
            {"name": "id", "shape": [1, 2], "dtype": "float32", "quantization": null, "kind": "embedding", "decode": ""}
        """)
        val a = Decode.decode(listOf(floatArrayOf(0.25f, 0.75f), floatArrayOf(1f, -2f, 0.5f), floatArrayOf(0f, 3f, 1f),
            floatArrayOf(31.5f), floatArrayOf(3f, 4f)), m, Crop(0, 0, 64).toPhoto(m.preprocessing.cropSize))
        assertEquals(0.75, (a["face"] as Answer.Probabilities).byLabel["face"]!!, 1e-6)
        assertEquals(listOf("smile", "beard"), (a["attrs"] as Answer.Present).labels)
        assertEquals("happy", (a["expr"] as Answer.ClassLabel).label)
        assertEquals(31.5, (a["age"] as Answer.Value).value, 1e-6)
        assertArrayEquals(doubleArrayOf(0.6, 0.8), (a["id"] as Answer.Embedding).unit, 1e-6)
    }

    @Test
    fun aDetectorsAnchorsBecomeItsFacesAfterThresholdAndWeightedNms() {
        // Four anchors of (box, one keypoint, score), relative to a 4-px input letterboxed from an
        // 8 x 4 frame (2 frame px per input px, the square's top 2 px above the frame): two that
        // overlap (IoU 0.67) merge into their score-weighted mean with the better score, one apart
        // stays, one under the 0.5 threshold is dropped.
        val m = manifest("""{"name": "faces", "shape": [1, 4, 7], "dtype": "float32", "quantization": null, "kind": "anchor_detections", "decode": ""}""")
        val anchors = floatArrayOf(
            0.0f, 0.0f, 0.5f, 0.5f, 0.25f, 0.25f, 0.9f,
            0.0f, 0.1f, 0.5f, 0.6f, 0.25f, 0.35f, 0.6f,
            0.6f, 0.6f, 0.9f, 0.9f, 0.75f, 0.75f, 0.7f,
            0.2f, 0.2f, 0.4f, 0.4f, 0.3f, 0.3f, 0.4f)
        val toPhoto = Detect.letterbox(8, 4, 4)
        assertArrayEquals(doubleArrayOf(2.0, 0.0, 0.0, 0.0, 2.0, -2.0), toPhoto, 1e-12)
        val faces = (Decode.decode(listOf(anchors), m, toPhoto)["faces"] as Answer.Faces).faces
        assertEquals(2, faces.size)
        val y0 = (0.0 * 0.9 + 0.1 * 0.6) / 1.5  // the weighted mean's top, relative
        assertArrayEquals(doubleArrayOf(0.0, y0 * 8 - 2, 4.0, (0.5 * 0.9 + 0.6 * 0.6) / 1.5 * 8 - 2), faces[0].box, 1e-5)
        assertEquals(0.9, faces[0].score, 1e-6)
        assertArrayEquals(doubleArrayOf(2.0, (0.25 * 0.9 + 0.35 * 0.6) / 1.5 * 8 - 2), faces[0].keypoints[0], 1e-5)
        assertArrayEquals(doubleArrayOf(4.8, 2.8, 7.2, 5.2), faces[1].box, 1e-5)
        assertEquals(0.7, faces[1].score, 1e-6)
    }
}
