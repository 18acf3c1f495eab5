package org.ktedge.demo.core

import kotlin.math.ceil
import kotlin.math.floor
import kotlin.math.hypot

/**
 * The manifest's `preprocessing.alignment` (rule `eyes_level`): rotate the eyes level, scale so
 * their distance is eyeDistance * size crop pixels, put their midpoint at eyeCentre * size.
 */
class AlignmentRule(val size: Int, val eyeDistance: Double, val eyeCentreX: Double, val eyeCentreY: Double)

/**
 * A detected face -> the model's input crop, the same steps as ktedge's model/align.py and
 * export/predict.py (a test holds them equal value for value): the similarity from the eyes, a
 * k x k box average of the photo when it shrinks by k >= 2, then bilinear sampling with a zero
 * border, every coordinate in float64 with the origin at the image's top-left corner.
 */
object Align {

    /** The (2, 3) crop -> photo matrix, row-major [a, b, tx, c, d, ty], from the subject's eyes. */
    fun cropToPhoto(rule: AlignmentRule, rightX: Double, rightY: Double, leftX: Double, leftY: Double): DoubleArray {
        val dx = leftX - rightX
        val dy = leftY - rightY
        val dist = hypot(dx, dy)
        require(dist > 0) { "the two eyes coincide: no alignment is defined" }
        val scale = dist / (rule.eyeDistance * rule.size)
        val cos = dx / dist * scale
        val sin = dy / dist * scale
        val cx = rule.eyeCentreX * rule.size
        val cy = rule.eyeCentreY * rule.size
        val midX = (rightX + leftX) / 2
        val midY = (rightY + leftY) / 2
        return doubleArrayOf(cos, -sin, midX - (cos * cx + -sin * cy), sin, cos, midY - (sin * cx + cos * cy))
    }

    /** A found face -> the model's input by the manifest's alignment, and its input -> photo matrix. */
    fun input(image: ArgbImage, face: Face, manifest: Manifest): Pair<ModelInput, DoubleArray> {
        val rule = manifest.preprocessing.alignment
            ?: throw ManifestError("manifest.json: no preprocessing.alignment (the model cannot take a detected face)")
        val m = cropToPhoto(rule, face.rightEye[0], face.rightEye[1], face.leftEye[0], face.leftEye[1])
        return Pair(Preprocess.modelInput(warpToInput(image, m, rule.size), manifest), m)
    }

    /** -> (size * size * 3) RGB floats 0..255, row-major HWC: the input whose pixels `m` maps to
     * photo pixels (export/predict.py warp_to_input). */
    fun warpToInput(image: ArgbImage, m: DoubleArray, size: Int): FloatArray {
        val k = hypot(m[0], m[3]).toInt()
        var w = image.width
        var h = image.height
        var src = rgb(image)
        var mk = m
        if (k >= 2) {  // box average first: bilinear alone aliases
            val sw = w / k
            val sh = h / k
            val small = IntArray(sw * sh * 3)
            // Only the k x k blocks the samples read, with a ring of two for the bilinear taps (the
            // rest stay 0, never read): the same values as averaging the whole frame, for a face a
            // fraction of the work.
            val n = size.toDouble()
            val corners = listOf(Geometry.map(m, 0.0, 0.0), Geometry.map(m, n, 0.0), Geometry.map(m, n, n), Geometry.map(m, 0.0, n))
            val xs = corners.map { it[0] / k }
            val ys = corners.map { it[1] / k }
            val bx0 = (floor(xs.min()!!) - 2).coerceIn(0.0, sw.toDouble()).toInt()
            val by0 = (floor(ys.min()!!) - 2).coerceIn(0.0, sh.toDouble()).toInt()
            val bx1 = (ceil(xs.max()!!) + 2).coerceIn(bx0.toDouble(), sw.toDouble()).toInt()
            val by1 = (ceil(ys.max()!!) + 2).coerceIn(by0.toDouble(), sh.toDouble()).toInt()
            for (y in by0 until by1) for (x in bx0 until bx1) for (c in 0 until 3) {
                var sum = 0.0
                for (yy in y * k until (y + 1) * k) for (xx in x * k until (x + 1) * k) sum += src[(yy * w + xx) * 3 + c]
                small[(y * sw + x) * 3 + c] = clip(floor(sum / (k * k) + 0.5))
            }
            src = small
            w = sw
            h = sh
            mk = DoubleArray(6) { m[it] / k }
        }
        return warp(src, w, h, mk, size)
    }

    /** Bilinear with a zero border: model/align.py's warp_affine, pixel by pixel. */
    fun warp(src: IntArray, w: Int, h: Int, m: DoubleArray, size: Int): FloatArray {
        val out = FloatArray(size * size * 3)
        fun tap(y: Int, x: Int, c: Int): Double = if (x < 0 || y < 0 || x >= w || y >= h) 0.0 else src[(y * w + x) * 3 + c].toDouble()
        for (r in 0 until size) for (col in 0 until size) {
            val px = col + 0.5
            val py = r + 0.5
            val x = m[0] * px + m[1] * py + m[2] - 0.5
            val y = m[3] * px + m[4] * py + m[5] - 0.5
            val x0 = floor(x)
            val y0 = floor(y)
            val fx = x - x0
            val fy = y - y0
            val xi = x0.toInt()
            val yi = y0.toInt()
            for (c in 0 until 3) {
                val top = (1 - fx) * tap(yi, xi, c) + fx * tap(yi, xi + 1, c)
                val bottom = (1 - fx) * tap(yi + 1, xi, c) + fx * tap(yi + 1, xi + 1, c)
                out[(r * size + col) * 3 + c] = clip(floor((1 - fy) * top + fy * bottom + 0.5)).toFloat()
            }
        }
        return out
    }

    private fun clip(v: Double): Int = v.coerceIn(0.0, 255.0).toInt()

    private fun rgb(image: ArgbImage): IntArray {
        val out = IntArray(image.width * image.height * 3)
        for (i in 0 until image.width * image.height) {
            val p = image.pixels[i]
            out[i * 3] = (p shr 16) and 0xff
            out[i * 3 + 1] = (p shr 8) and 0xff
            out[i * 3 + 2] = p and 0xff
        }
        return out
    }
}
