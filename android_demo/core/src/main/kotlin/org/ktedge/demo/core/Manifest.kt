package org.ktedge.demo.core

import com.google.gson.JsonArray
import com.google.gson.JsonElement
import com.google.gson.JsonObject
import com.google.gson.JsonParseException
import com.google.gson.JsonParser

/** A manifest that is malformed, or that does not describe the model beside it. Shown on screen. */
class ManifestError(message: String) : Exception(message)

/** int8 affine quantization: real = (q - zeroPoint) * scale. */
data class Quant(val scale: Double, val zeroPoint: Int)

/** The model's input as the manifest describes it; `tensor` is the runtime's own name for it. */
class InputSpec(
    val name: String, val tensor: String, val shape: IntArray, val dtype: String, val layout: String, val quant: Quant?
) {
    val elementCount: Int get() = shape.fold(1) { a, b -> a * b }
}

/** One output: `tensor` is the runtime's own name for it where it differs from `name`. */
class OutputSpec(
    val name: String, val tensor: String, val shape: IntArray, val dtype: String, val quant: Quant?,
    val kind: String, val labels: List<String>
) {
    val elementCount: Int get() = shape.fold(1) { a, b -> a * b }
}

/**
 * input value = (pixel - mean[c]) / std[c], pixel 0..255 after the centred square crop, or, for a
 * face a detector found, after the eyes-level crop of `alignment` (absent where the model states none).
 */
class Preprocessing(val cropSize: Int, val colourOrder: String, val mean: FloatArray, val std: FloatArray,
                    val alignment: AlignmentRule? = null)

/**
 * The `manifest.json` written beside every ktedge artifact: everything the app needs to feed the
 * model and decode its outputs, so nothing about pre/post-processing is hard-coded here.
 * `tools` are the exporter's package versions; `runtimeVersion` the runtime versions the artifact
 * needs, where the exporter states them (optional `runtime_version`, e.g. {"executorch": "1.5.1"}).
 */
class Manifest(
    val model: String, val format: String, val precision: String, val variant: String, val file: String,
    val sizeBytes: Long, val sha256: String, val input: InputSpec, val preprocessing: Preprocessing,
    val outputs: List<OutputSpec>, val tools: Map<String, String> = emptyMap(),
    val runtimeVersion: Map<String, String> = emptyMap()
) {
    /**
     * The oldest version of `runtime` ("executorch", "litert") this artifact needs: its
     * `runtime_version` entry where the manifest has one, else the exporter's own package version
     * from `tools` (the executorch that serialized the .pte; the ai-edge-litert that ran the .tflite
     * at export); null where the manifest says neither.
     */
    fun runtimeNeed(runtime: String): RuntimeNeed? {
        runtimeVersion[runtime]?.let { return RuntimeNeed(it, "runtime_version.$runtime") }
        val tool = EXPORTER_TOOL[runtime] ?: return null
        return tools[tool]?.let { RuntimeNeed(it, "tools.$tool") }
    }

    /** A face detector: its answer is the faces of a whole frame (an `anchor_detections` output). */
    val isDetector: Boolean get() = outputs.any { it.kind == "anchor_detections" }

    /** Refuses a model whose input tensor is not what the manifest says (shape and dtype). */
    fun checkInput(shape: IntArray, dtype: String) {
        if (!shape.contentEquals(input.shape) || dtype != input.dtype) {
            throw ManifestError(
                "manifest says input ${input.shape.contentToString()} ${input.dtype}, " +
                    "the model's input is ${shape.contentToString()} $dtype: this manifest belongs to another model"
            )
        }
    }

    /** Refuses a model whose outputs differ in count or element count from the manifest's. */
    fun checkOutputs(elementCounts: List<Int>) {
        val expected = outputs.map { it.elementCount }
        if (elementCounts != expected) {
            throw ManifestError(
                "manifest says ${outputs.size} output(s) of $expected elements, the model gives " +
                    "${elementCounts.size} of $elementCounts: this manifest belongs to another model"
            )
        }
    }

    companion object {
        const val SCHEMA = "ktedge.manifest/3"
        val DTYPES = listOf("float32", "float16", "int8", "uint8")
        /** Runtime -> the exporter-side package whose version in `tools` stands for it. */
        val EXPORTER_TOOL = mapOf("executorch" to "executorch", "litert" to "ai-edge-litert")
        val KINDS = listOf(
            "points_xy", "points_x_then_y", "points_xyz", "box_offsets", "probabilities", "value",
            "multilabel_logits", "class_logits", "embedding", "anchor_detections"
        )

        /** Parse and check a manifest; every problem is a ManifestError naming the field. */
        fun parse(text: String): Manifest {
            val root = try {
                JsonParser.parseString(text)
            } catch (e: JsonParseException) {
                throw ManifestError("manifest.json is not valid JSON (${e.message})")
            }
            if (!root.isJsonObject) throw ManifestError("manifest.json: expected an object")
            val m = root.asJsonObject
            val schema = str(m, "schema", "")
            if (schema != SCHEMA) throw ManifestError("manifest.json: schema is '$schema', this app reads '$SCHEMA' (re-export with this ktedge)")
            val pre = obj(m, "preprocessing", "")
            val preprocessing = Preprocessing(
                int(pre, "crop_size", "preprocessing"),
                oneOf(str(pre, "colour_order", "preprocessing"), listOf("RGB", "BGR"), "preprocessing.colour_order"),
                floats3(pre, "mean", "preprocessing"), floats3(pre, "std", "preprocessing"),
                if (pre.has("alignment")) parseAlignment(obj(pre, "alignment", "preprocessing")) else null
            )
            if (preprocessing.std.any { it == 0f }) throw ManifestError("manifest.json: preprocessing.std has a 0")
            val input = parseInput(obj(m, "input", ""), preprocessing.cropSize)
            val outs = arr(m, "outputs", "")
            if (outs.size() == 0) throw ManifestError("manifest.json: outputs is empty")
            val outputs = outs.mapIndexed { i, e -> parseOutput(asObj(e, "outputs[$i]"), "outputs[$i]") }
            return Manifest(
                str(m, "model", ""), str(m, "format", ""), str(m, "precision", ""), str(m, "variant", ""),
                str(m, "file", ""), long(m, "size_bytes", ""), str(m, "sha256", ""), input, preprocessing, outputs,
                strings(m, "tools"), strings(m, "runtime_version")
            )
        }

        private fun parseInput(o: JsonObject, crop: Int): InputSpec {
            val shape = ints(o, "shape", "input")
            val layout = oneOf(str(o, "layout", "input"), listOf("NCHW", "NHWC"), "input.layout")
            val dtype = oneOf(str(o, "dtype", "input"), DTYPES, "input.dtype")
            val want = if (layout == "NHWC") intArrayOf(1, crop, crop, 3) else intArrayOf(1, 3, crop, crop)
            if (!shape.contentEquals(want)) {
                throw ManifestError("manifest.json: input.shape ${shape.contentToString()} does not fit layout $layout and crop_size $crop")
            }
            val name = str(o, "name", "input")
            val tensor = if (o.has("tensor")) str(o, "tensor", "input") else name
            return InputSpec(name, tensor, shape, dtype, layout, quant(o, dtype, "input"))
        }

        private fun parseOutput(o: JsonObject, where: String): OutputSpec {
            val dtype = oneOf(str(o, "dtype", where), DTYPES, "$where.dtype")
            val name = str(o, "name", where)
            val labels = if (o.has("labels")) arr(o, "labels", where).map { it.asString } else emptyList()
            return OutputSpec(
                name, if (o.has("tensor")) str(o, "tensor", where) else name, ints(o, "shape", where), dtype,
                quant(o, dtype, where), oneOf(str(o, "kind", where), KINDS, "$where.kind"), labels
            )
        }

        private fun quant(o: JsonObject, dtype: String, where: String): Quant? {
            val q = o.get("quantization")
            val integer = dtype == "int8" || dtype == "uint8"
            if (q == null || q.isJsonNull) {
                if (integer) throw ManifestError("manifest.json: $where is $dtype but has no quantization")
                return null
            }
            val qo = asObj(q, "$where.quantization")
            val scale = qo.get("scale")?.takeIf { it.isJsonPrimitive && it.asJsonPrimitive.isNumber }?.asDouble
                ?: throw ManifestError("manifest.json: $where.quantization.scale is missing or not a number")
            if (scale <= 0) throw ManifestError("manifest.json: $where.quantization.scale must be > 0")
            return Quant(scale, int(qo, "zero_point", "$where.quantization"))
        }

        /** An optional top-level object of strings; absent -> empty. */
        private fun strings(m: JsonObject, key: String): Map<String, String> {
            val e = m.get(key) ?: return emptyMap()
            return asObj(e, key).entrySet().associate { (k, v) ->
                if (!v.isJsonPrimitive || !v.asJsonPrimitive.isString) throw ManifestError("manifest.json: $key.$k must be a string")
                k to v.asString
            }
        }

        private fun field(o: JsonObject, key: String, where: String): JsonElement =
            o.get(key) ?: throw ManifestError("manifest.json: ${path(where, key)} is missing")

        private fun path(where: String, key: String) = if (where.isEmpty()) key else "$where.$key"

        private fun str(o: JsonObject, key: String, where: String): String {
            val e = field(o, key, where)
            if (!e.isJsonPrimitive || !e.asJsonPrimitive.isString) throw ManifestError("manifest.json: ${path(where, key)} must be a string")
            return e.asString
        }

        private fun int(o: JsonObject, key: String, where: String): Int {
            val e = field(o, key, where)
            if (!e.isJsonPrimitive || !e.asJsonPrimitive.isNumber || e.asDouble != Math.floor(e.asDouble)) {
                throw ManifestError("manifest.json: ${path(where, key)} must be an integer")
            }
            return e.asInt
        }

        private fun long(o: JsonObject, key: String, where: String): Long {
            val e = field(o, key, where)
            if (!e.isJsonPrimitive || !e.asJsonPrimitive.isNumber) throw ManifestError("manifest.json: ${path(where, key)} must be an integer")
            return e.asLong
        }

        private fun obj(o: JsonObject, key: String, where: String): JsonObject = asObj(field(o, key, where), path(where, key))

        private fun asObj(e: JsonElement, where: String): JsonObject {
            if (!e.isJsonObject) throw ManifestError("manifest.json: $where must be an object")
            return e.asJsonObject
        }

        private fun arr(o: JsonObject, key: String, where: String): JsonArray {
            val e = field(o, key, where)
            if (!e.isJsonArray) throw ManifestError("manifest.json: ${path(where, key)} must be a list")
            return e.asJsonArray
        }

        private fun ints(o: JsonObject, key: String, where: String): IntArray {
            val a = arr(o, key, where)
            if (a.size() == 0 || a.any { !it.isJsonPrimitive || !it.asJsonPrimitive.isNumber || it.asInt < 1 }) {
                throw ManifestError("manifest.json: ${path(where, key)} must be a list of positive integers")
            }
            return IntArray(a.size()) { a[it].asInt }
        }

        private fun floats3(o: JsonObject, key: String, where: String): FloatArray {
            val a = arr(o, key, where)
            if (a.size() != 3 || a.any { !it.isJsonPrimitive || !it.asJsonPrimitive.isNumber }) {
                throw ManifestError("manifest.json: ${path(where, key)} must be 3 numbers")
            }
            return FloatArray(3) { a[it].asFloat }
        }

        private fun parseAlignment(o: JsonObject): AlignmentRule {
            val where = "preprocessing.alignment"
            oneOf(str(o, "rule", where), listOf("eyes_level"), "$where.rule")
            val centre = arr(o, "eye_centre", where)
            if (centre.size() != 2 || centre.any { !it.isJsonPrimitive || !it.asJsonPrimitive.isNumber }) {
                throw ManifestError("manifest.json: $where.eye_centre must be 2 numbers")
            }
            val distance = field(o, "eye_distance", where)
            if (!distance.isJsonPrimitive || !distance.asJsonPrimitive.isNumber || distance.asDouble <= 0.0) {
                throw ManifestError("manifest.json: $where.eye_distance must be a positive number")
            }
            return AlignmentRule(int(o, "size", where), distance.asDouble, centre[0].asDouble, centre[1].asDouble)
        }

        private fun oneOf(value: String, allowed: List<String>, where: String): String {
            if (value !in allowed) throw ManifestError("manifest.json: $where is '$value', expected one of $allowed")
            return value
        }
    }
}
