"""Face data: the synthetic generator, real-format parsers, and batched label sets."""
