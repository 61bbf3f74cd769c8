"""What a ticket costs, and how a search spends a budget of it (a foundation concept: imports only the
foundation modules; masking/, methods/ and the pipeline build on it).

* ``budget``: ``--budget params=F | macs=F | latency=MS`` parsed once (``Budget``).
* ``macs``: multiply-accumulate counts of a torch module or an ONNX graph.
* ``models``: cost models of channel tickets (``ChannelCost``, ``ParamCost``, ``MacCost``), ``cost_for``.
* ``select``: the best-scored channel units within a cost budget (``select_by_cost``).
* ``engine_latency``: sparse-cpu milliseconds of an unstructured ticket from a per-layer table of
  time vs density (``EngineLatency``: differentiable expectation, greedy allocation).
* ``correction``: the measured-latency correction loop shared by channel and weight tickets.
* ``latency``: where latency tables come from (the measuring lives in ``sparsekit.bench``; the pipeline
  prepares a ``LatencySource`` and hands it to the search).
"""
