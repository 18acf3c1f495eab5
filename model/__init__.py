"""Model family: data, backbones, the KT-Adapter, tasks, training."""
