"""Exporters (ExecuTorch, TFLite, CoreML, ONNX, Ethos-U) and validation in each runtime."""
