package org.ktedge.demo

import android.content.Context
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import org.ktedge.demo.core.Answer
import org.ktedge.demo.core.ArgbImage
import org.ktedge.demo.core.Artifact
import org.ktedge.demo.core.Crop
import org.ktedge.demo.core.Decode
import org.ktedge.demo.core.Preprocess

/** One photo through one model: the crop, the answers in image pixels, how long the model took. */
class Prediction(val crop: Crop, val answers: Map<String, Answer>, val modelMs: Double)

/** Photo -> manifest preprocessing -> model -> manifest decoding; the app's only inference path. */
class Inference(val artifact: Artifact, val model: FaceModel) : AutoCloseable {

    fun predict(bitmap: Bitmap): Prediction {
        val manifest = artifact.manifest
        val (hwc, crop) = Preprocess.faceCrop(bitmap.toArgbImage(), manifest.preprocessing.cropSize)
        val input = Preprocess.modelInput(hwc, manifest)
        val start = System.nanoTime()
        val outputs = model.run(input)
        val ms = (System.nanoTime() - start) / 1e6
        return Prediction(crop, Decode.decode(outputs, manifest, crop), ms)
    }

    override fun close() = model.close()
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
