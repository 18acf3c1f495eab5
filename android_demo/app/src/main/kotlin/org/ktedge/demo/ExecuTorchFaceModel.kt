package org.ktedge.demo

import org.ktedge.demo.core.Artifact
import org.ktedge.demo.core.ModelInput
import org.ktedge.demo.core.Quantize
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/**
 * A `.pte` in ExecuTorch. ExecuTorch fixes the delegate when the program is lowered (the XNNPACK,
 * Vulkan or QNN partitioner at export), so the delegate asked for is checked against the backends
 * the program really contains, read from the loaded method, and never switched at run time.
 */
class ExecuTorchFaceModel(private val artifact: Artifact, requested: String, threads: Int) : FaceModel {
    private val module: Module = Module.load(artifact.model.absolutePath, Module.LOAD_MODE_MMAP, threads)
    override val runtime = "ExecuTorch (org.pytorch:executorch-android)"
    override val delegate: String

    init {
        val status = module.loadMethod("forward")
        if (status != 0) {
            module.destroy()
            throw DelegateError("${artifact.model.name}: ExecuTorch could not load forward (error 0x${Integer.toHexString(status)}); " +
                "is the AAR older than the executorch that exported it?")
        }
        val backends = module.getMethodMetadata("forward").backends.toList()
        val wanted = BACKEND_FOR[requested]
        if (wanted == null || (backends.isNotEmpty() && wanted !in backends)) {
            module.destroy()
            throw DelegateError("${artifact.model.name} was lowered for ${if (backends.isEmpty()) "portable CPU kernels" else backends.joinToString()}; " +
                "ExecuTorch fixes the delegate at export: export with the partitioner for '$requested'")
        }
        delegate = if (backends.isEmpty()) "portable CPU kernels (no delegate in the .pte)" else backends.joinToString("+")
    }

    override fun run(input: ModelInput): List<FloatArray> {
        val manifest = artifact.manifest
        val shape = LongArray(input.shape.size) { input.shape[it].toLong() }
        val floats = input.floats
        val tensor = when {
            floats != null -> Tensor.fromBlob(floats, shape)
            manifest.input.dtype == "uint8" -> Tensor.fromBlobUnsigned(input.bytes!!, shape)
            else -> Tensor.fromBlob(input.bytes!!, shape)
        }
        val outputs = module.forward(EValue.from(tensor)).map { it.toTensor() }
        manifest.checkOutputs(outputs.map { it.numel().toInt() })
        return outputs.zip(manifest.outputs).map { (t, spec) ->
            val q = spec.quant
            when {
                q == null -> t.dataAsFloatArray
                spec.dtype == "uint8" -> Quantize.dequantize(t.dataAsUnsignedByteArray, q, spec.dtype)
                else -> Quantize.dequantize(t.dataAsByteArray, q, spec.dtype)
            }
        }
    }

    override fun close() = module.destroy()

    companion object {
        /** Delegate asked for -> the backend name a lowered .pte reports. ExecuTorch has no NNAPI backend. */
        private val BACKEND_FOR = mapOf(
            "xnnpack" to "XnnpackBackend", "cpu" to "XnnpackBackend", "gpu" to "VulkanBackend", "npu" to "QnnBackend"
        )
    }
}
