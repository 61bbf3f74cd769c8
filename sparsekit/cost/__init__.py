"""Cost models of tickets on a runtime (``engine_latency``: sparse-cpu time vs per-layer density)."""
