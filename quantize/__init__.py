"""int8 post-training quantization per backend."""
