package org.ktedge.demo.core

import java.io.File
import java.nio.file.Files
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class RuntimesTest {

    private fun manifest(format: String, tools: String, runtimeVersion: String? = null): Manifest {
        val text = Manifests.int8Nhwc().replace("\"format\": \"tflite\"", "\"format\": \"$format\"")
            .replace("\"tools\": {}", "\"tools\": $tools" + (runtimeVersion?.let { ", \"runtime_version\": $it" } ?: ""))
        return Manifest.parse(text)
    }

    private fun refused(m: Manifest, pinned: Map<String, String>, message: String) {
        try {
            Runtimes.check(m, pinned)
            fail("accepted a manifest that should fail with: $message")
        } catch (e: ManifestError) {
            assertTrue("'${e.message}' should contain '$message'", e.message!!.contains(message))
        }
    }

    @Test
    fun versionsCompareByTheirLeadingNumbers() {
        assertEquals(listOf(1, 5, 1), Versions.numbers("1.5.1+cpu"))
        assertEquals(listOf(2, 4, 0), Versions.numbers("2.4.0.dev20261026"))
        assertEquals(listOf(2), Versions.numbers("2.x"))
        assertNull(Versions.numbers("nightly"))
        assertEquals(0, Versions.compare(listOf(2), listOf(2, 0, 0)))
        assertTrue(Versions.compare(listOf(1, 10), listOf(1, 9, 9)) > 0)
        assertTrue(Versions.compare(listOf(1, 0, 1), listOf(1, 5, 1)) < 0)
    }

    @Test
    fun aPteFromANewerExecutorchIsRefusedWithTheVersionsNamed() {
        val m = manifest("executorch", "{\"executorch\": \"1.5.1\", \"torch\": \"2.13.0\"}")
        Runtimes.check(m, mapOf("executorch" to "1.5.1", "litert" to "2.3.0"))
        Runtimes.check(m, mapOf("executorch" to "1.6.0", "litert" to "2.3.0"))
        refused(m, mapOf("executorch" to "1.0.1", "litert" to "2.3.0"),
            "needs ExecuTorch (org.pytorch:executorch-android, executorchVersion) 1.5.1 or newer " +
                "(manifest.json tools.executorch); this app is built with 1.0.1")
    }

    @Test
    fun runtimeVersionIsReadBeforeTheExportersTools() {
        val m = manifest("tflite", "{\"ai-edge-litert\": \"2.3.0\"}", "{\"litert\": \"2.x\"}")
        assertEquals("runtime_version.litert", m.runtimeNeed("litert")!!.field)
        Runtimes.check(m, mapOf("executorch" to "1.5.1", "litert" to "2.0.0"))
        refused(m, mapOf("executorch" to "1.5.1", "litert" to "1.4.0"), "LiteRT (com.google.ai.edge.litert:litert, litertVersion) 2.x or newer")
        val fromTools = manifest("tflite", "{\"ai-edge-litert\": \"2.3.0\"}")
        refused(fromTools, mapOf("executorch" to "1.5.1", "litert" to "2.2.0"), "(manifest.json tools.ai-edge-litert)")
    }

    @Test
    fun aManifestThatSaysNothingOrHasNoRuntimeHereIsNotHeldBack() {
        Runtimes.check(manifest("tflite", "{}"), mapOf("executorch" to "0.1", "litert" to "0.1"))
        Runtimes.check(manifest("coreml", "{\"coremltools\": \"9.0\"}"), mapOf("executorch" to "0.1", "litert" to "0.1"))
        refused(manifest("executorch", "{\"executorch\": \"main\"}"), Runtimes.PINNED, "tools.executorch is 'main', not a version")
    }

    @Test
    fun theAppsPinsAcceptWhatThisKtedgeExports() {
        // pyproject.toml: executorch==1.5.1, ai-edge-litert==2.3.0
        Runtimes.check(manifest("executorch", "{\"executorch\": \"1.5.1\"}"))
        Runtimes.check(manifest("tflite", "{\"ai-edge-litert\": \"2.3.0\"}"))
    }

    @Test
    fun artifactLoadRefusesAnArtifactForANewerRuntime() {
        val dir = Files.createTempDirectory("artifact").toFile()
        val bytes = "model bytes".toByteArray()
        File(dir, "model.tflite").writeBytes(bytes)
        File(dir, "manifest.json").writeText(Manifests.int8Nhwc().replace("\"size_bytes\": 750000", "\"size_bytes\": ${bytes.size}")
            .replace("0".repeat(64), Artifact.sha256(File(dir, "model.tflite")))
            .replace("\"tools\": {}", "\"tools\": {\"ai-edge-litert\": \"9.0.0\"}"))
        try {
            Artifact.load(File(dir, "model.tflite"))
            fail("an artifact needing LiteRT 9.0.0 loaded into an app built with ${Runtimes.LITERT}")
        } catch (e: ManifestError) {
            assertTrue(e.message!!, e.message!!.contains("this app is built with ${Runtimes.LITERT}"))
        }
    }
}
