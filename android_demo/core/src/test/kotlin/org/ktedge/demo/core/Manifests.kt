package org.ktedge.demo.core

/** Small manifests for the unit tests, written the way ktedge's export stage writes them. */
object Manifests {
    fun int8Nhwc(extra: String = ""): String = """
        {"schema": "ktedge.manifest/3", "model": "kt-landmarks", "format": "tflite", "precision": "int8",
         "variant": "int8-io", "file": "model.tflite", "size_bytes": 750000, "sha256": "${"0".repeat(64)}",
         "runtime": "LiteRT",
         "input": {"name": "image", "shape": [1, 4, 4, 3], "dtype": "int8", "layout": "NHWC",
                   "quantization": {"scale": 0.5, "zero_point": -3}},
         "preprocessing": {"crop_size": 4, "crop_rule": "centre_square", "crop": "centre", "colour_order": "BGR", "range": "0..255",
                           "mean": [10.0, 20.0, 30.0], "std": [2.0, 4.0, 8.0]},
         "outputs": [{"name": "landmarks5", "shape": [1, 10], "dtype": "float32", "quantization": null,
                      "kind": "points_x_then_y", "decode": "x then y", "tensor": "output_0"}$extra],
         "quantization": null, "source": {}, "tools": {}}
    """.trimIndent()
}
