package org.ktedge.demo.core

import com.google.gson.GsonBuilder
import com.google.gson.JsonArray
import com.google.gson.JsonObject
import com.google.gson.JsonParser
import java.io.File
import javax.imageio.ImageIO

/**
 * Desktop entry point for ktedge's tests/test_android_core.py, which runs the same image and
 * manifest through export/preprocess.py and compares (javax.imageio stands in for Android's
 * BitmapFactory; the core code is the app's own):
 *   input  MANIFEST IMAGE          -> {"crop": .., "input": [..]} the tensor the app would feed
 *   align  MANIFEST IMAGE EYES     -> {"to_photo": [6], "input": [..]} a detected face's aligned input,
 *                                     EYES a JSON [[right x, y], [left x, y]] in photo pixels
 *   detect MANIFEST IMAGE          -> {"to_photo": [6], "input": [..]} a detector's letterboxed input
 *   decode MANIFEST TO_PHOTO OUTPUTS -> {"answers": ..} for raw outputs given as JSON lists, TO_PHOTO
 *                                     the JSON input -> photo matrix (6 numbers, row-major)
 *   result MANIFEST [DETECTOR]     -> a benchmark result file, as BenchmarkActivity writes it (with
 *                                     a detector: its row and the pipeline's too)
 *   load   MODEL                   -> {"runtime": .., "needs": .., "field": ..} once Artifact.load
 *                                     accepted it (file, size, sha256, runtime version)
 */
object ParityTool {
    @JvmStatic
    fun main(args: Array<String>) {
        val gson = GsonBuilder().serializeNulls().create()
        if (args[0] == "load") {
            val manifest = Artifact.load(File(args[1])).manifest
            val runtime = Runtimes.forFormat(manifest.format)
            val need = runtime?.let { manifest.runtimeNeed(it) }
            println(gson.toJson(JsonObject().apply {
                addProperty("runtime", runtime)
                addProperty("needs", need?.version)
                addProperty("field", need?.field)
            }))
            return
        }
        val manifest = Manifest.parse(File(args[1]).readText())
        when (args[0]) {
            "input" -> {
                val image = ImageIO.read(File(args[2])) ?: throw ImageError("${args[2]}: not an image")
                val argb = ArgbImage(image.width, image.height, image.getRGB(0, 0, image.width, image.height, null, 0, image.width))
                val (hwc, crop) = Preprocess.faceCrop(argb, manifest.preprocessing.cropSize)
                val input = Preprocess.modelInput(hwc, manifest)
                val values = JsonArray()
                val floats = input.floats
                if (floats != null) floats.forEach { values.add(it) }
                else input.bytes!!.forEach { values.add(if (manifest.input.dtype == "uint8") it.toInt() and 0xff else it.toInt()) }
                println(gson.toJson(JsonObject().apply { add("crop", crop(crop)); add("input", values) }))
            }
            "align", "detect" -> {
                val image = ImageIO.read(File(args[2])) ?: throw ImageError("${args[2]}: not an image")
                val argb = ArgbImage(image.width, image.height, image.getRGB(0, 0, image.width, image.height, null, 0, image.width))
                val (input, m) = if (args[0] == "detect") Detect.input(argb, manifest) else {
                    val (r, l) = JsonParser.parseString(File(args[3]).readText()).asJsonArray.map { e ->
                        e.asJsonArray.let { doubleArrayOf(it[0].asDouble, it[1].asDouble) }
                    }
                    Align.input(argb, Face(r + l, 1.0, listOf(r, l)), manifest)
                }
                val values = JsonArray()
                val floats = input.floats
                if (floats != null) floats.forEach { values.add(it) }
                else input.bytes!!.forEach { values.add(if (manifest.input.dtype == "uint8") it.toInt() and 0xff else it.toInt()) }
                val matrix = JsonArray().apply { m.forEach { add(it) } }
                println(gson.toJson(JsonObject().apply { add("to_photo", matrix); add("input", values) }))
            }
            "decode" -> {
                val m = JsonParser.parseString(File(args[2]).readText()).asJsonArray
                val toPhoto = DoubleArray(6) { m[it].asDouble }
                val raw = JsonParser.parseString(File(args[3]).readText()).asJsonArray
                val outputs = raw.mapIndexed { i, e ->
                    val spec = manifest.outputs[i]
                    val a = e.asJsonArray
                    val quant = spec.quant
                    if (quant == null) FloatArray(a.size()) { a[it].asFloat }
                    else Quantize.dequantize(ByteArray(a.size()) { a[it].asInt.toByte() }, quant, spec.dtype)
                }
                val answers = JsonObject()
                Decode.decode(outputs, manifest, toPhoto).forEach { (name, answer) -> answers.add(name, answer.toJson()) }
                println(gson.toJson(JsonObject().apply { add("answers", answers) }))
            }
            "result" -> {
                val device = DeviceInfo("Google Pixel 8", null, "Pixel 8", "Tensor G3", "Android 15 (API 35)", 9)
                val pipeline = if (args.size < 3) null else PipelineTiming(Manifest.parse(File(args[2]).readText()),
                    "LiteRT 2.3.0 CompiledModel", "CPU (XNNPACK)", LatencyStats(doubleArrayOf(1.1, 1.3, 1.2)),
                    LatencyStats(doubleArrayOf(9.5, 9.1, 9.9)), 1)
                print(LatencyResult.ok(device, manifest, "LiteRT 2.3.0 CompiledModel", "CPU (XNNPACK)", 10, 1, 21.7,
                    1.9, LatencyStats(doubleArrayOf(0.52, 0.48, 0.50, 0.61, 0.49)), 5, 61.2, 14.8, pipeline))
            }
            else -> throw IllegalArgumentException("mode ${args[0]}: expected input, align, detect, decode, result or load")
        }
    }

    private fun crop(c: Crop) = JsonObject().apply {
        addProperty("x0", c.x0)
        addProperty("y0", c.y0)
        addProperty("side", c.side)
    }
}
