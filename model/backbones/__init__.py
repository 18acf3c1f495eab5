"""Backbones in plain PyTorch, each exportable by torch.export."""
