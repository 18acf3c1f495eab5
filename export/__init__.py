"""Exporters (ExecuTorch, TFLite, CoreML, ONNX) and validation in each runtime."""
