package org.ktedge.demo

import org.ktedge.demo.core.Artifact
import org.ktedge.demo.core.DelegateError
import org.ktedge.demo.core.ModelInput

/** One artifact loaded in its runtime. `delegate` is what runs it, as the runtime reports it. */
interface FaceModel : AutoCloseable {
    val runtime: String
    val delegate: String

    /** The manifest's input tensor -> dequantized outputs, in manifest order. */
    fun run(input: ModelInput): List<FloatArray>
}

object FaceModels {
    /** What `ktedge bench --delegate` may ask for. */
    val DELEGATES = listOf("xnnpack", "cpu", "gpu", "npu", "nnapi")

    /** `npuLibraryDir`: the app's native library folder, where LiteRT looks for NPU dispatch libraries. */
    fun open(artifact: Artifact, delegate: String, threads: Int, npuLibraryDir: String): FaceModel =
        when (artifact.manifest.format) {
            "executorch" -> ExecuTorchFaceModel(artifact, delegate, threads)
            "tflite" -> LiteRtFaceModel(artifact, delegate, threads, npuLibraryDir)
            "ethosu" -> throw DelegateError(
                "${artifact.model.name}: an Ethos-U program runs on an Arm Ethos-U NPU (a microcontroller " +
                    "or Arm's Corstone FVP), not on a phone; use the .pte of executorch-int8 or a .tflite"
            )
            else -> throw DelegateError(
                "${artifact.model.name}: ${artifact.manifest.format} artifacts do not run in this app " +
                    "(Core ML is Apple only; use the .pte or .tflite)"
            )
        }
}
