package org.ktedge.demo.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class ManifestTest {

    private fun refused(text: String, message: String) {
        try {
            Manifest.parse(text)
            fail("accepted a manifest that should fail with: $message")
        } catch (e: ManifestError) {
            assertTrue("'${e.message}' should contain '$message'", e.message!!.contains(message))
        }
    }

    @Test
    fun parsesEveryFieldTheAppUses() {
        val m = Manifest.parse(Manifests.int8Nhwc())
        assertEquals("tflite", m.format)
        assertEquals("NHWC", m.input.layout)
        assertArrayEquals(intArrayOf(1, 4, 4, 3), m.input.shape)
        assertEquals(Quant(0.5, -3), m.input.quant)
        assertEquals("BGR", m.preprocessing.colourOrder)
        assertArrayEquals(floatArrayOf(2f, 4f, 8f), m.preprocessing.std, 0f)
        assertEquals("output_0", m.outputs[0].tensor)
        assertEquals("points_x_then_y", m.outputs[0].kind)
        assertEquals(10, m.outputs[0].elementCount)
    }

    @Test
    fun badManifestsAreNamedErrors() {
        val good = Manifests.int8Nhwc()
        refused("{not json", "not valid JSON")
        refused(good.replace("ktedge.manifest/3", "ktedge.manifest/2"), "this app reads 'ktedge.manifest/3'")
        refused(good.replace("\"layout\": \"NHWC\"", "\"layout\": \"CHW\""), "input.layout is 'CHW'")
        refused(good.replace("\"shape\": [1, 4, 4, 3]", "\"shape\": [1, 3, 4, 4]"), "does not fit layout NHWC and crop_size 4")
        refused(good.replace("\"quantization\": {\"scale\": 0.5, \"zero_point\": -3}", "\"quantization\": null"),
            "input is int8 but has no quantization")
        refused(good.replace("\"scale\": 0.5", "\"scale\": 0"), "input.quantization.scale must be > 0")
        refused(good.replace("\"kind\": \"points_x_then_y\"", "\"kind\": \"heatmap\""), "outputs[0].kind is 'heatmap'")
        refused(good.replace("\"std\": [2.0, 4.0, 8.0]", "\"std\": [2.0, 0, 8.0]"), "preprocessing.std has a 0")
        refused(good.replace("\"crop_size\": 4", "\"crop_size\": \"4\""), "preprocessing.crop_size must be an integer")
        refused(good.replace("\"model\": \"kt-landmarks\", ", ""), "model is missing")
        refused(good.replace("\"tools\": {}", "\"tools\": {\"executorch\": 1}"), "tools.executorch must be a string")
        refused(good.replace("\"tools\": {}", "\"tools\": {}, \"runtime_version\": \"1.5\""), "runtime_version must be an object")
    }

    @Test
    fun aModelThatIsNotTheManifestsIsRefused() {
        val m = Manifest.parse(Manifests.int8Nhwc())
        m.checkInput(intArrayOf(1, 4, 4, 3), "int8")
        m.checkOutputs(listOf(10))
        try {
            m.checkInput(intArrayOf(1, 3, 4, 4), "float32")
            fail("a float NCHW model passed an int8 NHWC manifest")
        } catch (e: ManifestError) {
            assertTrue(e.message!!.contains("the model's input is [1, 3, 4, 4] float32"))
        }
        try {
            m.checkOutputs(listOf(136))
            fail("136 outputs passed a 10-value manifest")
        } catch (e: ManifestError) {
            assertTrue(e.message!!.contains("gives 1 of [136]"))
        }
    }
}
