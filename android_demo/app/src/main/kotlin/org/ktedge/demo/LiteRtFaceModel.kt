package org.ktedge.demo

import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.LiteRtException
import com.google.ai.edge.litert.Model
import com.google.ai.edge.litert.TensorBuffer
import com.google.ai.edge.litert.TensorType
import org.ktedge.demo.core.Artifact
import org.ktedge.demo.core.ManifestError
import org.ktedge.demo.core.ModelInput
import org.ktedge.demo.core.Quantize

/**
 * A `.tflite` in LiteRT's CompiledModel API. Only the accelerator asked for is offered to the
 * compiler, so a model that compiles runs there; one that cannot is an error, not a silent CPU
 * fallback. Inputs and outputs are bound by the tensor names the manifest records.
 */
class LiteRtFaceModel(private val artifact: Artifact, requested: String, threads: Int) : FaceModel {
    private val model: Model = Model.load(artifact.model.absolutePath)
    private val compiled: CompiledModel
    private val inputs: Map<String, TensorBuffer>
    private val outputs: LinkedHashMap<String, TensorBuffer> = LinkedHashMap()
    override val runtime = "LiteRT CompiledModel (com.google.ai.edge.litert)"
    override val delegate: String

    init {
        val accelerator = when (requested) {
            "xnnpack", "cpu" -> Accelerator.CPU
            "gpu" -> Accelerator.GPU
            "npu" -> Accelerator.NPU
            else -> {
                model.close()
                throw DelegateError("'$requested': LiteRT's CompiledModel has no NNAPI path (NNAPI is deprecated from " +
                    "Android 15); ask for npu (vendor NPU through LiteRT) or gpu")
            }
        }
        val manifest = artifact.manifest
        compiled = try {
            val type = model.getInputTensorType(manifest.input.tensor)
            manifest.checkInput(type.layout?.dimensions ?: manifest.input.shape, dtypeName(type.elementType))
            val options = CompiledModel.Options(accelerator)
            if (accelerator == Accelerator.CPU) options.cpuOptions = CompiledModel.CpuOptions(numThreads = threads)
            CompiledModel.create(model, options)
        } catch (e: LiteRtException) {
            model.close()
            throw DelegateError("LiteRT could not compile ${artifact.model.name} for $accelerator: ${e.message}")
        } catch (e: ManifestError) {
            model.close()
            throw e
        }
        delegate = if (accelerator == Accelerator.CPU) "CPU (XNNPACK, $threads thread(s))" else accelerator.name
        inputs = mapOf(manifest.input.tensor to compiled.createInputBuffer(manifest.input.tensor))
        for (spec in manifest.outputs) outputs[spec.tensor] = compiled.createOutputBuffer(spec.tensor)
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
        model.close()
    }

    private fun dtypeName(t: TensorType.ElementType) = when (t) {
        TensorType.ElementType.FLOAT -> "float32"
        TensorType.ElementType.INT8 -> "int8"
        TensorType.ElementType.INT -> "int32"
        TensorType.ElementType.BOOLEAN -> "bool"
        else -> t.name
    }
}
