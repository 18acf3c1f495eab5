package org.ktedge.demo.core

import kotlin.math.round

/** int8/uint8 affine (de)quantization with the manifest's scale and zero point. */
object Quantize {

    /** q = clamp(round(x / scale) + zeroPoint); round half to even, as numpy does. */
    fun quantize(values: FloatArray, q: Quant, dtype: String): ByteArray {
        val lo = if (dtype == "uint8") 0 else -128
        val hi = if (dtype == "uint8") 255 else 127
        return ByteArray(values.size) {
            val v = round(values[it] / q.scale).toInt() + q.zeroPoint
            v.coerceIn(lo, hi).toByte() // uint8 258 -> 0x02 wraps only after the clamp, so bytes hold 0..255
        }
    }

    /** Raw output bytes -> real values. uint8 bytes are read unsigned. */
    fun dequantize(bytes: ByteArray, q: Quant, dtype: String): FloatArray =
        FloatArray(bytes.size) {
            val v = if (dtype == "uint8") bytes[it].toInt() and 0xff else bytes[it].toInt()
            ((v - q.zeroPoint) * q.scale).toFloat()
        }
}
