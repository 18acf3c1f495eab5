"""Latency harness and the benchmark scripts."""
