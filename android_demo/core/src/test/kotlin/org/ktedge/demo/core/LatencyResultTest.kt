package org.ktedge.demo.core

import com.google.gson.JsonParser
import org.junit.Assert.assertEquals
import org.junit.Test

class LatencyResultTest {

    @Test
    fun percentilesInterpolateLikeNumpy() {
        val s = LatencyStats(DoubleArray(10) { (10 - it).toDouble() }) // 10, 9, ..., 1
        assertEquals(5.5, s.median, 1e-12)
        assertEquals(9.1, s.p90, 1e-12) // numpy.percentile(range(1, 11), 90)
        assertEquals(9.91, s.p99, 1e-12)
        assertEquals(5.5, s.mean, 1e-12)
        assertEquals(1.0, s.min, 0.0)
        assertEquals(10.0, s.max, 0.0)
    }

    @Test
    fun theResultFileHasTheHarnessSchemaFields() {
        val m = Manifest.parse(Manifests.int8Nhwc())
        val device = DeviceInfo("Pixel 8", "SER1", "Pixel 8", "Tensor G3", "Android 15 (API 35)", 9)
        val text = LatencyResult.ok(device, m, "LiteRT 2.3.0 CompiledModel", "CPU (XNNPACK)", 10, 4, 12.5, 3.25,
            LatencyStats(doubleArrayOf(1.0, 2.0, 3.0)), 3, 48.0, null)
        val doc = JsonParser.parseString(text).asJsonObject
        assertEquals("ktedge.latency/1", doc["schema"].asString)
        assertEquals("android", doc["device"].asJsonObject["kind"].asString)
        val row = doc["results"].asJsonArray[0].asJsonObject
        assertEquals("app:tflite-int8-int8-io", row["target"].asString)
        assertEquals(2.0, row["latency_ms"].asJsonObject["median"].asDouble, 0.0)
        assertEquals("CPU (XNNPACK)", row["delegate"].asString)
        assertEquals(true, row["model_rss_mb"].isJsonNull)
    }
}
