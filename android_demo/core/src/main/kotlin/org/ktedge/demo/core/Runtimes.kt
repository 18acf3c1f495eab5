package org.ktedge.demo.core

/**
 * The runtime versions this app is built with: the AARs android_demo/gradle.properties pins
 * (tests/test_android_app_compiles.py holds the two equal, and no older than the exporter's pins in
 * pyproject.toml). Neither library reports its own version at run time, so the build states it.
 */
object Runtimes {
    /** org.pytorch:executorch-android */
    const val EXECUTORCH = "1.5.1"
    /** com.google.ai.edge.litert:litert */
    const val LITERT = "2.3.0"

    val PINNED = mapOf("executorch" to EXECUTORCH, "litert" to LITERT)

    private val NAMES = mapOf(
        "executorch" to "ExecuTorch (org.pytorch:executorch-android, executorchVersion)",
        "litert" to "LiteRT (com.google.ai.edge.litert:litert, litertVersion)"
    )

    /** The runtime an artifact of this format runs in here; null where the app has none. */
    fun forFormat(format: String): String? = when (format) {
        "executorch" -> "executorch"
        "tflite" -> "litert"
        else -> null
    }

    /**
     * Refuses an artifact that needs a newer runtime than the one built in. ExecuTorch guarantees
     * that a runtime loads programs from its own and older exporters, not newer ones; a .tflite is
     * held to the LiteRT it was checked with at export for the same reason (newer op versions).
     */
    fun check(manifest: Manifest, pinned: Map<String, String> = PINNED) {
        val runtime = forFormat(manifest.format) ?: return
        val need = manifest.runtimeNeed(runtime) ?: return
        val have = pinned.getValue(runtime)
        val needed = Versions.numbers(need.version)
            ?: throw ManifestError("manifest.json: ${need.field} is '${need.version}', not a version")
        if (Versions.compare(Versions.numbers(have)!!, needed) < 0) {
            throw ManifestError(
                "${manifest.file} needs ${NAMES.getValue(runtime)} ${need.version} or newer " +
                    "(manifest.json ${need.field}); this app is built with $have, which cannot load it: " +
                    "raise it in android_demo/gradle.properties and rebuild"
            )
        }
    }
}

/** The oldest runtime version an artifact needs, and the manifest field that says so. */
class RuntimeNeed(val version: String, val field: String)

object Versions {
    /** "1.5.1", "1.5.1+cpu", "2.4.0.dev20261026", "2.x" -> the leading numbers ([1, 5, 1], [2]); null if none. */
    fun numbers(version: String): List<Int>? {
        val out = ArrayList<Int>()
        for (part in version.trim().split('.')) {
            val digits = part.takeWhile { it.isDigit() }
            if (digits.isEmpty()) break
            out.add(digits.toInt())
            if (digits.length < part.length) break
        }
        return if (out.isEmpty()) null else out
    }

    /** Missing components count as 0: [2] == [2, 0, 0]. */
    fun compare(a: List<Int>, b: List<Int>): Int {
        for (i in 0 until maxOf(a.size, b.size)) {
            val c = a.getOrElse(i) { 0 }.compareTo(b.getOrElse(i) { 0 })
            if (c != 0) return c
        }
        return 0
    }
}
