package org.ktedge.demo.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.fail
import org.junit.Test

class PreprocessTest {

    private fun grey(width: Int, height: Int, value: (Int, Int) -> Int) =
        ArgbImage(width, height, IntArray(width * height) {
            val v = value(it % width, it / width)
            (0xff shl 24) or (v shl 16) or (v shl 8) or v
        })

    @Test
    fun theCropIsTheLargestCentredSquare() {
        assertEquals(Crop(20, 0, 60), Preprocess.centreCrop(100, 60))
        assertEquals(Crop(0, 3, 50), Preprocess.centreCrop(50, 57))
    }

    @Test
    fun sameSizeIsTheIdentityAndUpsamplingInterpolates() {
        val image = grey(2, 2) { x, y -> 100 * x + 10 * y }
        val (same, _) = Preprocess.faceCrop(image, 2)
        assertArrayEquals(floatArrayOf(0f, 0f, 0f, 100f, 100f, 100f, 10f, 10f, 10f, 110f, 110f, 110f), same, 0f)
        // 2 -> 4: source index (i + 0.5) / 2 - 0.5 = -0.25 (clamped 0), 0.25, 0.75, 1.25 (clamped 1)
        val up = Preprocess.bilinear(floatArrayOf(0f, 0f, 0f, 100f, 100f, 100f, 0f, 0f, 0f, 100f, 100f, 100f), 2, 4)
        assertArrayEquals(floatArrayOf(0f, 25f, 75f, 100f), FloatArray(4) { up[it * 3] }, 1e-4f)
    }

    @Test
    fun shrinkingByTwoOrMoreAveragesBoxesFirst() {
        // 9 px -> 4: k = 2, the centred 8 px, 2x2 box means of a horizontal ramp 0, 10, ..., 80
        val image = grey(9, 9) { x, _ -> 10 * x }
        val (out, _) = Preprocess.faceCrop(image, 4)
        assertArrayEquals(floatArrayOf(5f, 25f, 45f, 65f), FloatArray(4) { out[it * 3] }, 1e-4f)
    }

    @Test
    fun anImageSmallerThanTheCropIsRefused() {
        try {
            Preprocess.faceCrop(grey(40, 30) { _, _ -> 0 }, 64)
            fail("a 40x30 image was accepted for a 64 px crop")
        } catch (e: ImageError) {
            assertEquals("image is 40x30 px; the model needs at least 64x64 around the face", e.message)
        }
    }

    @Test
    fun modelInputFollowsColourOrderNormalisationLayoutAndQuantization() {
        val m = Manifest.parse(Manifests.int8Nhwc())
        val hwc = FloatArray(4 * 4 * 3) { (it % 3) * 50f + 40f } // R=40, G=90, B=140 everywhere
        val input = Preprocess.modelInput(hwc, m)
        // BGR: channel 0 is blue. (140-10)/2 = 65 -> 130 - 3 = 127; (90-20)/4 = 17.5 -> 35 - 3 = 32;
        // (40-30)/8 = 1.25 -> round(2.5) = 2 (half to even) - 3 = -1
        assertArrayEquals(byteArrayOf(127, 32, -1), input.bytes!!.copyOfRange(0, 3))
        assertArrayEquals(intArrayOf(1, 4, 4, 3), input.shape)
    }

    @Test
    fun quantizationRoundsHalfToEvenAndClamps() {
        val q = Quant(1.0, 0)
        assertArrayEquals(byteArrayOf(0, 2, -2, 127, -128), Quantize.quantize(floatArrayOf(0.5f, 1.5f, -2.5f, 300f, -300f), q, "int8"))
        assertArrayEquals(byteArrayOf(0, 255.toByte()), Quantize.quantize(floatArrayOf(-4f, 300f), q, "uint8"))
        assertArrayEquals(floatArrayOf(255f, -1f), Quantize.dequantize(byteArrayOf(255.toByte(), -1), q, "uint8").let {
            floatArrayOf(it[0], Quantize.dequantize(byteArrayOf(-1), q, "int8")[0])
        }, 0f)
    }
}
