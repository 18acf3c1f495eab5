package org.ktedge.demo.core

import java.io.File
import java.nio.file.Files
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class ArtifactTest {

    private fun folder(content: ByteArray, recordedSize: Int, recordedSha: String): File {
        val dir = Files.createTempDirectory("artifact").toFile()
        File(dir, "model.tflite").writeBytes(content)
        File(dir, "manifest.json").writeText(
            Manifests.int8Nhwc().replace("\"size_bytes\": 750000", "\"size_bytes\": $recordedSize").replace("0".repeat(64), recordedSha)
        )
        return File(dir, "model.tflite")
    }

    @Test
    fun aModelMatchingItsManifestLoads() {
        val bytes = "model bytes".toByteArray()
        // sha256("model bytes"), computed independently with `printf 'model bytes' | sha256sum`
        val sha = "9cb7487000bc86ac36ce83c4acfabe8878552be99572a6770f65ab1d048a5c48"
        val model = folder(bytes, bytes.size, sha)
        assertEquals(sha, Artifact.sha256(model))
        assertEquals("tflite", Artifact.load(model).manifest.format)
    }

    @Test
    fun aTruncatedOrSwappedModelIsRefused() {
        val bytes = "model bytes".toByteArray()
        try {
            Artifact.load(folder(bytes.copyOf(5), bytes.size, "0".repeat(64)))
            fail("a truncated model loaded")
        } catch (e: ManifestError) {
            assertTrue(e.message!!.contains("5 bytes, its manifest says 11 (copy incomplete?)"))
        }
        try {
            Artifact.load(folder(bytes, bytes.size, "0".repeat(64)))
            fail("a model with another sha256 loaded")
        } catch (e: ManifestError) {
            assertTrue(e.message!!.contains("does not match its manifest"))
        }
    }
}
