package org.ktedge.demo

import org.ktedge.demo.core.Artifact
import org.ktedge.demo.core.DelegateError
import org.ktedge.demo.core.ExecuTorchDelegates
import org.ktedge.demo.core.ModelInput
import org.ktedge.demo.core.Quantize
import org.ktedge.demo.core.Runtimes
import org.pytorch.executorch.EValue
import org.pytorch.executorch.ExecuTorchRuntime
import org.pytorch.executorch.ExecutorchRuntimeException
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/**
 * A `.pte` in ExecuTorch. ExecuTorch fixes the delegate when the program is lowered (the XNNPACK,
 * Vulkan or QNN partitioner at export), so the delegate asked for is checked against the backends
 * the program really contains (its method metadata) and those this runtime has registered, and
 * never switched at run time. `loadMethod` throws on failure (it returns nothing from 1.3 on).
 */
class ExecuTorchFaceModel(private val artifact: Artifact, requested: String, threads: Int) : FaceModel {
    private val module: Module = Module.load(artifact.model.absolutePath, Module.LOAD_MODE_MMAP, threads)
    override val runtime = "ExecuTorch ${Runtimes.EXECUTORCH} (org.pytorch:executorch-android)"
    override val delegate: String

    init {
        val name = artifact.model.name
        try {
            delegate = ExecuTorchDelegates.resolve(
                name, requested, module.getMethodMetadata("forward").backends.toList(),
                ExecuTorchRuntime.getRegisteredBackends().toList()
            )
            module.loadMethod("forward")
        } catch (e: ExecutorchRuntimeException) {
            module.destroy()
            throw DelegateError("$name: ExecuTorch ${Runtimes.EXECUTORCH} could not load forward: ${e.message}")
        } catch (e: Exception) {
            module.destroy()
            throw e
        }
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
}
