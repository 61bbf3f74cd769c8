"""Benchmarks: runtimes, timing in fresh processes, memory, accuracy, report tables.

Importing this package is cheap; heavy modules (torch, onnxruntime) are imported where used.
"""
