"""sparse-cpu, sparsekit's native sparse inference engine: the ``sparsekit-engine`` distribution
(``engine/`` in this repository; numpy + onnx + the native module, installs without torch).

``sparsekit.engine`` IS ``sparsekit_engine`` (the same module object, not a copy), and so are its
submodules: ``sparsekit.engine.planner is sparsekit_engine.planner``, and setting a constant on one sets it
on the other.
"""

from __future__ import annotations

import sys

import sparsekit_engine
from sparsekit_engine import errors, graph, native, planner, reference, session

for _module in (errors, graph, native, planner, reference, session):
    sys.modules[f"{__name__}.{_module.__name__.rsplit('.', 1)[1]}"] = _module
try:  # the compiled module too: importing it under a second name would register its types twice
    from sparsekit_engine import _native

    sys.modules[f"{__name__}._native"] = _native
except ImportError:  # not built: sparsekit_engine.native.lib() says how to build it when it is needed
    pass
sys.modules[__name__] = sparsekit_engine
