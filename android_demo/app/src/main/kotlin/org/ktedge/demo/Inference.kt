package org.ktedge.demo

import android.content.Context
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import org.ktedge.demo.core.ArgbImage
import org.ktedge.demo.core.Artifact
import org.ktedge.demo.core.FacePipeline
import org.ktedge.demo.core.FrameAnswers

/** A loaded artifact: its manifest and the runtime that runs it. */
class Loaded(val artifact: Artifact, val model: FaceModel) : AutoCloseable {
    override fun close() = model.close()
}

/**
 * The app's only inference path: a frame through core's FacePipeline (detector -> alignment ->
 * model on each face, or the centred square where the model states no alignment or no detector
 * was pushed beside it, or a detector alone on the whole frame).
 */
class Inference(val model: Loaded, val detector: Loaded?) : AutoCloseable {
    private val pipeline = FacePipeline(model.artifact.manifest, model.model::run,
        detector?.artifact?.manifest, detector?.model?.let { d -> d::run })

    /** Whether each frame goes through the detector first. */
    val detects: Boolean get() = pipeline.detects

    fun predict(bitmap: Bitmap): FrameAnswers = pipeline.frame(bitmap.toArgbImage())

    override fun close() {
        model.close()
        detector?.close()
    }
}

fun Bitmap.toArgbImage(): ArgbImage {
    val pixels = IntArray(width * height)
    getPixels(pixels, 0, width, 0, 0, width, height)
    return ArgbImage(width, height, pixels)
}

/** The face photos bundled in assets/faces (for the demo screen and the benchmark's input). */
object BundledFaces {
    fun names(context: Context): List<String> =
        (context.assets.list("faces") ?: emptyArray()).filter { it.endsWith(".png") || it.endsWith(".jpg") }.sorted()

    fun load(context: Context, name: String): Bitmap =
        context.assets.open("faces/$name").use { BitmapFactory.decodeStream(it) }
            ?: throw IllegalStateException("assets/faces/$name is not an image")
}
