package org.ktedge.demo

import android.app.Activity
import android.os.Build
import android.os.Bundle
import android.util.Log
import org.ktedge.demo.core.Artifact
import org.ktedge.demo.core.Detect
import org.ktedge.demo.core.DeviceInfo
import org.ktedge.demo.core.FacePipeline
import org.ktedge.demo.core.LatencyResult
import org.ktedge.demo.core.LatencyStats
import org.ktedge.demo.core.PipelineTiming
import org.ktedge.demo.core.Preprocess
import java.io.File

/**
 * Benchmark mode, driven by `ktedge bench --device android --runner app`:
 *   adb shell am start -W -n org.ktedge.demo/.BenchmarkActivity --es model PATH --es delegate NAME
 *       --ei warmup N --ei iters N [--ei threads N] [--es detector PATH]
 * Loads the artifact (manifest checked), runs a bundled face photo through it `warmup` times
 * untimed and `iters` times timed, and writes files/latency.json in ktedge's latency schema, with
 * the delegate the runtime reports. With a detector artifact, the detector alone on the whole
 * photo and the pipeline (detector, alignment, the model on each face: the demo screen's frame
 * path) are timed the same way, as two more rows. A failure is written as an error row with its reason.
 */
class BenchmarkActivity : Activity() {

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val model = intent.getStringExtra("model")
        val delegate = intent.getStringExtra("delegate") ?: "xnnpack"
        val warmup = intent.getIntExtra("warmup", 10)
        val iters = intent.getIntExtra("iters", 100)
        val threads = intent.getIntExtra("threads", 1)
        val detector = intent.getStringExtra("detector")
        Thread {
            val result = if (model == null) {
                LatencyResult.error(device(), null, "?", "?", delegate, warmup, iters, threads, "no --es model PATH given")
            } else {
                benchmark(File(model), detector?.let { File(it) }, delegate, warmup, maxOf(iters, 1), threads)
            }
            val out = File(getExternalFilesDir(null), RESULT)
            val tmp = File(out.parentFile, "$RESULT.tmp")
            tmp.writeText(result)
            tmp.renameTo(out) // atomic: the harness polls for this file
            Log.i(TAG, "ktedge result: ${out.absolutePath}")
            runOnUiThread { finish() }
        }.start()
    }

    /** `block` run `warmup` times untimed, then `iters` times timed (ms). */
    private fun timed(warmup: Int, iters: Int, block: () -> Unit): LatencyStats {
        repeat(warmup) { block() }
        return LatencyStats(DoubleArray(iters) {
            val start = System.nanoTime()
            block()
            (System.nanoTime() - start) / 1e6
        })
    }

    private fun benchmark(model: File, detectorFile: File?, delegate: String, warmup: Int, iters: Int, threads: Int): String {
        var artifact: Artifact? = null
        var runtime = if (model.name.endsWith(".pte")) "ExecuTorch" else "LiteRT"
        return try {
            val rssBefore = procStatusMb("VmRSS")
            val loadStart = System.nanoTime()
            artifact = Artifact.load(model)
            val loaded = FaceModels.open(artifact, delegate, threads, applicationInfo.nativeLibraryDir)
            val loadMs = (System.nanoTime() - loadStart) / 1e6
            runtime = loaded.runtime
            loaded.use { m ->
                val manifest = artifact.manifest
                val face = BundledFaces.load(this, BundledFaces.names(this).first())
                val (hwc, _) = Preprocess.faceCrop(face.toArgbImage(), manifest.preprocessing.cropSize)
                val input = Preprocess.modelInput(hwc, manifest)
                val firstStart = System.nanoTime()
                m.run(input)
                val firstMs = (System.nanoTime() - firstStart) / 1e6
                val stats = timed(warmup, iters) { m.run(input) }
                val rssAfter = procStatusMb("VmRSS")
                val pipeline = detectorFile?.let { f ->
                    val detector = Artifact.load(f)
                    FaceModels.open(detector, delegate, threads, applicationInfo.nativeLibraryDir).use { d ->
                        val image = face.toArgbImage()
                        val frame = Detect.input(image, detector.manifest).first
                        val faces = FacePipeline(manifest, m::run, detector.manifest, d::run)
                        PipelineTiming(detector.manifest, d.runtime, d.delegate, timed(warmup, iters) { d.run(frame) },
                            timed(warmup, iters) { faces.frame(image) }, faces.frame(image).faces.size)
                    }
                }
                LatencyResult.ok(device(), manifest, m.runtime, m.delegate, warmup, threads, loadMs, firstMs,
                    stats, iters, procStatusMb("VmHWM"),
                    if (rssBefore != null && rssAfter != null) rssAfter - rssBefore else null, pipeline)
            }
        } catch (e: Exception) {
            Log.e(TAG, "benchmark of $model failed", e)
            LatencyResult.error(device(), artifact?.manifest, model.name, runtime, delegate, warmup, iters, threads,
                "${e.javaClass.simpleName}: ${e.message}")
        }
    }

    private fun device(): DeviceInfo {
        val soc = if (Build.VERSION.SDK_INT >= 31) "${Build.SOC_MANUFACTURER} ${Build.SOC_MODEL}" else Build.HARDWARE
        return DeviceInfo("${Build.MANUFACTURER} ${Build.MODEL}", null, Build.MODEL, soc,
            "Android ${Build.VERSION.RELEASE} (API ${Build.VERSION.SDK_INT})", Runtime.getRuntime().availableProcessors())
    }

    /** A /proc/self/status memory line (kB) in MB; null where the kernel hides it. */
    private fun procStatusMb(key: String): Double? = try {
        File("/proc/self/status").readLines().firstOrNull { it.startsWith("$key:") }
            ?.split(Regex("\\s+"))?.get(1)?.toDouble()?.div(1024.0)
    } catch (e: Exception) {
        null
    }

    companion object {
        const val TAG = "ktedge"
        const val RESULT = "latency.json" // benchmarks/android.py APP_RESULT
    }
}
