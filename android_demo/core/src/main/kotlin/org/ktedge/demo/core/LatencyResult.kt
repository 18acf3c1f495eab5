package org.ktedge.demo.core

import com.google.gson.GsonBuilder
import com.google.gson.JsonArray
import com.google.gson.JsonObject
import kotlin.math.floor

/** Timed runs -> the figures ktedge's harness reports (numpy's linear-interpolation percentiles). */
class LatencyStats(samplesMs: DoubleArray) {
    private val sorted = samplesMs.sortedArray()
    val median: Double get() = percentile(50.0)
    val p90: Double get() = percentile(90.0)
    val p99: Double get() = percentile(99.0)
    val mean: Double = sorted.average()
    val min: Double = sorted.first()
    val max: Double = sorted.last()

    init {
        require(sorted.isNotEmpty()) { "no timed runs" }
    }

    fun percentile(q: Double): Double {
        val pos = (sorted.size - 1) * q / 100.0
        val lo = floor(pos).toInt()
        val hi = kotlin.math.min(lo + 1, sorted.size - 1)
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo)
    }
}

/** What the phone is, for the result's `device` object. */
class DeviceInfo(val name: String, val serial: String?, val model: String, val soc: String, val os: String, val cores: Int)

/**
 * The detector + model pipeline's figures (benchmark mode with a detector): the detector timed
 * alone on its letterboxed frame, and the whole frame through FacePipeline (detector, alignment,
 * the model on each of `faces` faces), written as two more rows beside the model's own.
 */
class PipelineTiming(
    val detector: Manifest, val detectorRuntime: String, val detectorDelegate: String, val detectorStats: LatencyStats,
    val stats: LatencyStats, val faces: Int
)

/**
 * The benchmark mode's result file: ktedge's latency schema (benchmarks/latency.schema.json, the
 * same as bench/<device>/latency.json), a result row for the model it was started with, then,
 * where it was given a detector, the detector's row (role published) and the pipeline's (role
 * pipeline, naming the detector's row and the faces the model ran on).
 */
object LatencyResult {
    const val SCHEMA = "ktedge.latency/1"

    fun ok(
        device: DeviceInfo, manifest: Manifest, runtime: String, delegate: String, warmup: Int, threads: Int,
        loadMs: Double, firstMs: Double, stats: LatencyStats, iters: Int, peakRssMb: Double?, modelRssMb: Double?,
        pipeline: PipelineTiming? = null
    ): String {
        val row = row(manifest, runtime, delegate, "ok", threads)
        row.addProperty("load_ms", loadMs)
        row.addProperty("first_ms", firstMs)
        row.add("latency_ms", latency(stats))
        row.addProperty("peak_rss_mb", peakRssMb)
        row.addProperty("model_rss_mb", modelRssMb)
        val rows = mutableListOf(row)
        if (pipeline != null) {
            val detector = row(pipeline.detector, pipeline.detectorRuntime, pipeline.detectorDelegate, "ok", threads, "detector")
            detector.addProperty("role", "published")
            detector.add("latency_ms", latency(pipeline.detectorStats))
            val whole = row(manifest, runtime, delegate, "ok", threads, "pipeline")
            whole.addProperty("role", "pipeline")
            whole.addProperty("detector", detector["target"].asString)
            whole.addProperty("faces", pipeline.faces)
            whole.add("latency_ms", latency(pipeline.stats))
            rows += listOf(detector, whole)
        }
        return document(device, warmup, iters, threads, rows)
    }

    /** A run that could not happen (delegate refused, manifest mismatch): the reason, no figures. */
    fun error(
        device: DeviceInfo, manifest: Manifest?, modelFile: String, runtime: String, delegate: String, warmup: Int,
        iters: Int, threads: Int, reason: String
    ): String {
        val row = if (manifest != null) row(manifest, runtime, delegate, "error", threads) else JsonObject().apply {
            addProperty("target", "app:$modelFile")
            addProperty("model", modelFile)
            addProperty("format", if (modelFile.endsWith(".pte")) "executorch" else "tflite")
            addProperty("precision", "unknown")
            addProperty("runtime", runtime)
            addProperty("delegate", delegate)
            addProperty("status", "error")
            addProperty("threads", threads)
        }
        row.addProperty("reason", reason)
        return document(device, warmup, iters, threads, listOf(row))
    }

    private fun latency(stats: LatencyStats) = JsonObject().apply {
        addProperty("median", stats.median)
        addProperty("p90", stats.p90)
        addProperty("p99", stats.p99)
        addProperty("mean", stats.mean)
        addProperty("min", stats.min)
        addProperty("max", stats.max)
    }

    private fun row(manifest: Manifest, runtime: String, delegate: String, status: String, threads: Int,
                    prefix: String = "") = JsonObject().apply {
        addProperty("target", "app:${if (prefix.isEmpty()) "" else "$prefix:"}${manifest.format}-${manifest.precision}-${manifest.variant}")
        addProperty("model", manifest.model)
        addProperty("format", manifest.format)
        addProperty("precision", manifest.precision)
        addProperty("runtime", runtime)
        addProperty("delegate", delegate)
        addProperty("status", status)
        addProperty("size_bytes", manifest.sizeBytes)
        addProperty("threads", threads)
    }

    private fun document(device: DeviceInfo, warmup: Int, iters: Int, threads: Int, rows: List<JsonObject>): String {
        val doc = JsonObject()
        doc.addProperty("schema", SCHEMA)
        doc.add("device", JsonObject().apply {
            addProperty("kind", "android")
            addProperty("name", device.name)
            if (device.serial != null) addProperty("serial", device.serial)
            addProperty("model", device.model)
            addProperty("soc", device.soc)
            addProperty("os", device.os)
            addProperty("cores", device.cores)
        })
        doc.add("protocol", JsonObject().apply {
            addProperty("warmup", warmup)
            addProperty("iters", iters)
            addProperty("threads", threads)
        })
        doc.add("results", JsonArray().apply { rows.forEach { add(it) } })
        return GsonBuilder().setPrettyPrinting().serializeNulls().create().toJson(doc) + "\n"
    }
}
