package org.ktedge.demo.core

import kotlin.math.floor
import kotlin.math.max
import kotlin.math.min

/** An image the app got from the camera or a file, as Android's Bitmap.getPixels gives it (ARGB ints). */
class ArgbImage(val width: Int, val height: Int, val pixels: IntArray) {
    init {
        require(pixels.size == width * height) { "pixels: ${pixels.size} values for a ${width}x$height image" }
    }
}

/** Where the model's square crop lies in the original image (pixels). */
data class Crop(val x0: Int, val y0: Int, val side: Int) {
    /** The (2, 3) matrix taking points of the size x size model input to photo pixels. */
    fun toPhoto(size: Int): DoubleArray {
        val s = side.toDouble() / size
        return doubleArrayOf(s, 0.0, x0.toDouble(), 0.0, s, y0.toDouble())
    }
}

/** An image too small for the model: shown on screen, like a manifest error. */
class ImageError(message: String) : Exception(message)

/** The tensor to feed: float values or int8/uint8 bytes, in the manifest's layout and shape. */
class ModelInput(val shape: IntArray, val floats: FloatArray?, val bytes: ByteArray?)

/**
 * Photo -> model input, the same steps as ktedge's export/preprocess.py (a test holds them equal):
 * centred square crop, a k x k box average when shrinking by k >= 2, bilinear resampling with
 * half-pixel centres, then colour order, (pixel - mean) / std, layout and int8 quantization from
 * the manifest.
 */
object Preprocess {

    fun centreCrop(width: Int, height: Int): Crop {
        val side = min(width, height)
        return Crop((width - side) / 2, (height - side) / 2, side)
    }

    /** -> (size * size * 3) RGB floats 0..255, row-major HWC, and where the crop lay. */
    fun faceCrop(image: ArgbImage, size: Int): Pair<FloatArray, Crop> {
        if (min(image.width, image.height) < size) {
            throw ImageError("image is ${image.width}x${image.height} px; the model needs at least ${size}x$size around the face")
        }
        val crop = centreCrop(image.width, image.height)
        return Pair(resizeSquare(image, crop, size), crop)
    }

    /** The crop, box-filtered when shrinking by 2x or more (bilinear alone aliases), then bilinear. */
    fun resizeSquare(image: ArgbImage, crop: Crop, size: Int): FloatArray {
        val k = crop.side / size
        if (k < 2) return bilinear(rgb(image, crop.x0, crop.y0, crop.side), crop.side, size)
        val n = crop.side / k
        val trim = (crop.side - n * k) / 2
        val src = rgb(image, crop.x0 + trim, crop.y0 + trim, n * k)
        val boxed = FloatArray(n * n * 3)
        val side = n * k
        for (by in 0 until n) for (bx in 0 until n) for (c in 0 until 3) {
            var sum = 0.0
            for (y in by * k until (by + 1) * k) for (x in bx * k until (bx + 1) * k) sum += src[(y * side + x) * 3 + c]
            boxed[(by * n + bx) * 3 + c] = (sum / (k * k)).toFloat()
        }
        return bilinear(boxed, n, size)
    }

    /** (n * n * 3) -> (size * size * 3); source index (i + 0.5) * n / size - 0.5, clamped to [0, n - 1]. */
    fun bilinear(src: FloatArray, n: Int, size: Int): FloatArray {
        val i0 = IntArray(size)
        val i1 = IntArray(size)
        val f = FloatArray(size)
        for (i in 0 until size) {
            val s = max((i + 0.5) * (n.toDouble() / size) - 0.5, 0.0)
            i0[i] = min(floor(s).toInt(), n - 1)
            i1[i] = min(i0[i] + 1, n - 1)
            f[i] = (s - i0[i]).toFloat()
        }
        val rows = FloatArray(size * n * 3) // vertical pass first, as the Python side does
        for (y in 0 until size) for (x in 0 until n) for (c in 0 until 3) {
            rows[(y * n + x) * 3 + c] = src[(i0[y] * n + x) * 3 + c] * (1 - f[y]) + src[(i1[y] * n + x) * 3 + c] * f[y]
        }
        val out = FloatArray(size * size * 3)
        for (y in 0 until size) for (x in 0 until size) for (c in 0 until 3) {
            out[(y * size + x) * 3 + c] = rows[(y * n + i0[x]) * 3 + c] * (1 - f[x]) + rows[(y * n + i1[x]) * 3 + c] * f[x]
        }
        return out
    }

    /** The model's tensor from an HWC RGB crop, everything from the manifest. */
    fun modelInput(hwc: FloatArray, manifest: Manifest): ModelInput {
        val pre = manifest.preprocessing
        val input = manifest.input
        val s = pre.cropSize
        require(hwc.size == s * s * 3) { "crop has ${hwc.size} values, the manifest's crop_size $s needs ${s * s * 3}" }
        val values = FloatArray(hwc.size)
        for (y in 0 until s) for (x in 0 until s) for (c in 0 until 3) {
            val from = if (pre.colourOrder == "BGR") 2 - c else c
            val v = (hwc[(y * s + x) * 3 + from] - pre.mean[c]) / pre.std[c]
            val at = if (input.layout == "NHWC") (y * s + x) * 3 + c else (c * s + y) * s + x
            values[at] = v
        }
        return when (input.dtype) {
            "float32" -> ModelInput(input.shape, values, null)
            "int8", "uint8" -> ModelInput(input.shape, null, Quantize.quantize(values, input.quant!!, input.dtype))
            else -> throw ManifestError("input dtype ${input.dtype}: this app feeds float32, int8 or uint8 inputs")
        }
    }

    /** ARGB pixels of a square region -> (side * side * 3) RGB floats. */
    private fun rgb(image: ArgbImage, x0: Int, y0: Int, side: Int): FloatArray {
        val out = FloatArray(side * side * 3)
        for (y in 0 until side) for (x in 0 until side) {
            val p = image.pixels[(y0 + y) * image.width + x0 + x]
            val at = (y * side + x) * 3
            out[at] = ((p shr 16) and 0xff).toFloat()
            out[at + 1] = ((p shr 8) and 0xff).toFloat()
            out[at + 2] = (p and 0xff).toFloat()
        }
        return out
    }
}
