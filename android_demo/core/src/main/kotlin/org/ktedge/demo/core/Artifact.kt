package org.ktedge.demo.core

import java.io.File
import java.security.MessageDigest

/**
 * A model file with its manifest beside it, as `ktedge export` writes them (one folder per
 * artifact). Loading checks the file is the one the manifest describes: name, size and sha256,
 * so a half-copied or swapped model is an error on screen, not wrong landmarks; and that the
 * runtime built into the app is not older than the one the artifact needs (Runtimes.check).
 */
class Artifact(val model: File, val manifest: Manifest) {
    companion object {
        fun load(model: File, runtimes: Map<String, String> = Runtimes.PINNED): Artifact {
            val manifestFile = File(model.parentFile, "manifest.json")
            if (!model.isFile) throw ManifestError("${model.path}: no such model file")
            if (!manifestFile.isFile) {
                throw ManifestError("${model.path}: no manifest.json beside it; push the whole artifact folder from <run>/export/")
            }
            val manifest = try {
                Manifest.parse(manifestFile.readText())
            } catch (e: ManifestError) {
                throw ManifestError("${manifestFile.path}: ${e.message}")
            }
            if (manifest.file != model.name) throw ManifestError("${manifestFile.path} describes ${manifest.file}, not ${model.name}")
            Runtimes.check(manifest, runtimes)
            if (model.length() != manifest.sizeBytes) {
                throw ManifestError("${model.path}: ${model.length()} bytes, its manifest says ${manifest.sizeBytes} (copy incomplete?)")
            }
            val digest = sha256(model)
            if (digest != manifest.sha256) throw ManifestError("${model.path}: sha256 $digest does not match its manifest")
            return Artifact(model, manifest)
        }

        fun sha256(file: File): String {
            val md = MessageDigest.getInstance("SHA-256")
            file.inputStream().use { s ->
                val buffer = ByteArray(1 shl 16)
                while (true) {
                    val n = s.read(buffer)
                    if (n < 0) break
                    md.update(buffer, 0, n)
                }
            }
            return md.digest().joinToString("") { String.format("%02x", it) }
        }
    }
}
