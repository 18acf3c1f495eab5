package org.ktedge.demo

import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.Environment
import com.google.ai.edge.litert.LiteRtException
import com.google.ai.edge.litert.TensorBuffer
import org.ktedge.demo.core.Artifact
import org.ktedge.demo.core.DelegateError
import org.ktedge.demo.core.LiteRtDelegates
import org.ktedge.demo.core.ModelInput
import org.ktedge.demo.core.Quantize
import org.ktedge.demo.core.Runtimes

/**
 * A `.tflite` in LiteRT's CompiledModel API (no Model class from 2.1: the compiled model is created
 * from the file and answers tensor types itself). The accelerator asked for is offered only where
 * LiteRT's environment holds it, and what ran is read back from LiteRT (LiteRtDelegates), so a
 * request that fell back to CPU is recorded as a fallback. Inputs and outputs are bound by the
 * tensor names the manifest records. `npuLibraryDir`: where the vendor's NPU dispatch libraries
 * would be (the app's native library folder); NPU is there only if the APK ships them.
 */
class LiteRtFaceModel(
    private val artifact: Artifact, requested: String, threads: Int, npuLibraryDir: String
) : FaceModel {
    private val env: Environment
    private val compiled: CompiledModel
    private val inputs: Map<String, TensorBuffer>
    private val outputs: LinkedHashMap<String, TensorBuffer> = LinkedHashMap()
    override val runtime = "LiteRT ${Runtimes.LITERT} CompiledModel (com.google.ai.edge.litert)"
    override val delegate: String

    init {
        val wanted = LiteRtDelegates.accelerator(requested)
        env = if (wanted == "NPU") {
            Environment.create(mapOf(
                Environment.Option.DispatchLibraryDir to npuLibraryDir,
                Environment.Option.CompilerPluginLibraryDir to npuLibraryDir
            ))
        } else {
            Environment.create()
        }
        val manifest = artifact.manifest
        var made: CompiledModel? = null
        val buffers = ArrayList<TensorBuffer>()
        try {
            val available = env.getAvailableAccelerators().map { it.name }.toSet()
            val offered = LiteRtDelegates.offer(wanted, available).map { Accelerator.valueOf(it) }
            val options = CompiledModel.Options(*offered.toTypedArray())
            options.cpuOptions = CompiledModel.CpuOptions(numThreads = threads)
            val model = try {
                CompiledModel.create(artifact.model.absolutePath, options, env)
            } catch (e: LiteRtException) {
                throw DelegateError("LiteRT could not compile ${artifact.model.name} for ${offered.joinToString("+")}: ${e.message}")
            }
            made = model
            val type = model.getInputTensorType(manifest.input.tensor)
            manifest.checkInput(type.layout?.dimensions?.toIntArray() ?: manifest.input.shape, dtypeName(type.elementType.name))
            val boundary = listOf(model.getInputBufferRequirements(manifest.input.tensor)) +
                manifest.outputs.map { model.getOutputBufferRequirements(it.tensor) }
            delegate = LiteRtDelegates.label(wanted, threads, available, boundary.map { r -> r.supportedTypes.map { it.name } })
            val input = model.createInputBuffer(manifest.input.tensor)
            buffers.add(input)
            inputs = mapOf(manifest.input.tensor to input)
            for (spec in manifest.outputs) {
                val output = model.createOutputBuffer(spec.tensor)
                buffers.add(output)
                outputs[spec.tensor] = output
            }
            compiled = model
        } catch (e: Exception) {
            buffers.forEach { it.close() }
            made?.close()
            env.close()
            throw e
        }
    }

    override fun run(input: ModelInput): List<FloatArray> {
        val buffer = inputs.values.first()
        val floats = input.floats
        if (floats != null) buffer.writeFloat(floats) else buffer.writeInt8(input.bytes!!)
        compiled.run(inputs, outputs)
        val manifest = artifact.manifest
        val values = manifest.outputs.map { spec ->
            val b = outputs.getValue(spec.tensor)
            val q = spec.quant
            if (q == null) b.readFloat() else Quantize.dequantize(b.readInt8(), q, spec.dtype)
        }
        manifest.checkOutputs(values.map { it.size })
        return values
    }

    override fun close() {
        inputs.values.forEach { it.close() }
        outputs.values.forEach { it.close() }
        compiled.close()
        env.close() // passed in to CompiledModel.create, so LiteRT leaves closing it to its owner
    }

    /** LiteRT's TensorType.ElementType names -> the manifest's dtype names. */
    private fun dtypeName(elementType: String) = when (elementType) {
        "FLOAT" -> "float32"
        "INT8" -> "int8"
        "INT" -> "int32"
        "INT64" -> "int64"
        "BOOLEAN" -> "bool"
        else -> elementType
    }
}
