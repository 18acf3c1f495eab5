package org.ktedge.demo.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class DelegatesTest {

    private fun refused(message: String, block: () -> Unit) {
        try {
            block()
            fail("accepted what should fail with: $message")
        } catch (e: DelegateError) {
            assertTrue("'${e.message}' should contain '$message'", e.message!!.contains(message))
        }
    }

    private val registered = listOf("XnnpackBackend")

    @Test
    fun executorchRecordsTheBackendsTheProgramHolds() {
        assertEquals("XnnpackBackend", ExecuTorchDelegates.resolve("m.pte", "xnnpack", listOf("XnnpackBackend"), registered))
        assertEquals("XnnpackBackend", ExecuTorchDelegates.resolve("m.pte", "cpu", listOf("XnnpackBackend"), registered))
        assertEquals("portable CPU kernels (no delegate in the .pte)", ExecuTorchDelegates.resolve("m.pte", "cpu", emptyList(), registered))
    }

    @Test
    fun executorchRefusesWhatTheProgramOrTheRuntimeCannotRun() {
        refused("m.pte was lowered for XnnpackBackend; ExecuTorch fixes the delegate at export") {
            ExecuTorchDelegates.resolve("m.pte", "npu", listOf("XnnpackBackend"), registered)
        }
        refused("lowered for no delegate") { ExecuTorchDelegates.resolve("m.pte", "gpu", emptyList(), registered) }
        refused("no NNAPI") { ExecuTorchDelegates.resolve("m.pte", "nnapi", listOf("XnnpackBackend"), registered) }
        refused("m.pte needs QnnBackend, which this ExecuTorch runtime (${Runtimes.EXECUTORCH}) lacks (it has XnnpackBackend)") {
            ExecuTorchDelegates.resolve("m.pte", "npu", listOf("QnnBackend"), registered)
        }
    }

    @Test
    fun liteRtIsOfferedOnlyWhatItsEnvironmentHolds() {
        assertEquals(listOf("CPU"), LiteRtDelegates.offer("CPU", setOf("CPU", "GPU")))
        assertEquals(listOf("GPU", "CPU"), LiteRtDelegates.offer("GPU", setOf("CPU", "GPU")))
        assertEquals(listOf("CPU"), LiteRtDelegates.offer("NPU", setOf("CPU", "GPU")))
        refused("no NNAPI path") { LiteRtDelegates.accelerator("nnapi") }
        assertEquals("NPU", LiteRtDelegates.accelerator("npu"))
    }

    @Test
    fun anNpuRequestThatFellBackToCpuIsRecordedAsOne() {
        val host = listOf(LiteRtDelegates.HOST)
        val npuMemory = listOf("FastRpc", "DmaBuf")
        assertEquals("CPU (XNNPACK, 2 thread(s))", LiteRtDelegates.label("CPU", 2, setOf("CPU"), listOf(host, host)))
        assertEquals(
            "CPU fallback: NPU asked, LiteRT's environment has no NPU accelerator (it has CPU, GPU); ran on CPU (XNNPACK, 4 thread(s))",
            LiteRtDelegates.label("NPU", 4, setOf("GPU", "CPU"), listOf(host, host))
        )
        assertTrue(LiteRtDelegates.label("NPU", 1, setOf("CPU", "NPU"), listOf(host, host)).startsWith("CPU fallback: NPU asked and present"))
        assertEquals("NPU+CPU (1 of 2 inputs/outputs shared with CPU ops)",
            LiteRtDelegates.label("NPU", 1, setOf("CPU", "NPU"), listOf(npuMemory, host)))
        assertEquals("NPU (all 2 inputs/outputs in NPU memory)",
            LiteRtDelegates.label("NPU", 1, setOf("CPU", "NPU"), listOf(npuMemory, npuMemory + host)))
    }
}
