package org.ktedge.demo.core

/** The delegate asked for cannot run this artifact here: the reason is shown and recorded. */
class DelegateError(message: String) : Exception(message)

/**
 * ExecuTorch fixes delegates when the program is lowered (the XNNPACK, Vulkan or QNN partitioner
 * at export): the request is checked against the backends the loaded program holds and those the
 * runtime has registered, and what is recorded is the program's own backends.
 */
object ExecuTorchDelegates {
    /** Delegate asked for -> the backend a lowered program names. ExecuTorch has no NNAPI backend. */
    val BACKEND_FOR = mapOf(
        "xnnpack" to "XnnpackBackend", "cpu" to "XnnpackBackend", "gpu" to "VulkanBackend", "npu" to "QnnBackend"
    )

    /** -> the delegate to record; DelegateError where this request or this runtime cannot run the program. */
    fun resolve(model: String, requested: String, program: List<String>, registered: List<String>): String {
        val wanted = BACKEND_FOR[requested]
            ?: throw DelegateError("'$requested': ExecuTorch has no such backend (no NNAPI); ask for ${BACKEND_FOR.keys.joinToString()}")
        val missing = program.filter { it !in registered }
        if (missing.isNotEmpty()) {
            throw DelegateError(
                "$model needs ${missing.joinToString()}, which this ExecuTorch runtime (${Runtimes.EXECUTORCH}) lacks " +
                    "(it has ${registered.joinToString()}): use an AAR built with that backend"
            )
        }
        if (program.isEmpty()) {
            if (wanted != "XnnpackBackend") {
                throw DelegateError("$model was lowered for no delegate (portable CPU kernels); export with the partitioner for '$requested'")
            }
            return "portable CPU kernels (no delegate in the .pte)"
        }
        if (wanted !in program) {
            throw DelegateError(
                "$model was lowered for ${program.joinToString()}; ExecuTorch fixes the delegate at export: " +
                    "export with the partitioner for '$requested'"
            )
        }
        return program.joinToString("+")
    }
}

/**
 * LiteRT's CompiledModel is offered accelerators and reports back two things: the accelerators its
 * environment really holds, and for each model input and output the buffer types the compiled
 * model takes. A tensor an accelerator owns takes that accelerator's memory (OpenCL, AHardwareBuffer,
 * FastRPC, DMA-BUF, ...); one shared with a CPU op takes host memory only
 * (LiteRtCompiledModelT::GetTensorBufferRequirements). LiteRT's Kotlin API has no
 * isFullyAccelerated (its C++ API does), so the record says what these two show and no more.
 */
object LiteRtDelegates {
    const val HOST = "HostMemory"

    /** Delegate asked for -> the LiteRT accelerator name. */
    fun accelerator(requested: String): String = when (requested) {
        "xnnpack", "cpu" -> "CPU"
        "gpu" -> "GPU"
        "npu" -> "NPU"
        else -> throw DelegateError(
            "'$requested': LiteRT's CompiledModel has no NNAPI path (NNAPI is deprecated from Android 15); " +
                "ask for npu (vendor NPU through LiteRT) or gpu"
        )
    }

    /**
     * The accelerators to offer: the one asked for, with CPU for the ops it cannot take, where the
     * environment holds it; else CPU alone, so the fallback is certain and recorded as one. (LiteRT
     * itself adds CPU to an NPU-only request.)
     */
    fun offer(wanted: String, available: Set<String>): List<String> =
        if (wanted == "CPU" || wanted !in available) listOf("CPU") else listOf(wanted, "CPU")

    /** What ran, to record. `boundary`: for each input and output, the buffer types the compiled model takes. */
    fun label(wanted: String, threads: Int, available: Set<String>, boundary: List<List<String>>): String {
        val cpu = "CPU (XNNPACK, $threads thread(s))"
        if (wanted == "CPU") return cpu
        if (wanted !in available) {
            return "CPU fallback: $wanted asked, LiteRT's environment has no $wanted accelerator " +
                "(it has ${available.sorted().joinToString()}); ran on $cpu"
        }
        val shared = boundary.count { types -> types.all { it == HOST } }
        val n = boundary.size
        return when (shared) {
            0 -> "$wanted (all $n inputs/outputs in $wanted memory)"
            n -> "CPU fallback: $wanted asked and present, but every input and output is in host memory, " +
                "shared with CPU ops ($cpu)"
            else -> "$wanted+CPU ($shared of $n inputs/outputs shared with CPU ops)"
        }
    }
}
