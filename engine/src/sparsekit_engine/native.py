"""The compiled sparse-cpu module (sparsekit_engine/_native, sources in engine/native/), loaded on first use.

Its own module so the planner and the session both reach it without importing the package's __init__.
"""

from __future__ import annotations

import importlib
from typing import Any

from sparsekit_engine.errors import EngineBuildError


def lib() -> Any:
    """The native module; EngineBuildError with the fix when it was not built."""
    try:
        # the compiled extension (no Python source, so import graphs would attribute a static import
        # of it to the package __init__, which imports this module)
        _native = importlib.import_module("sparsekit_engine._native")
    except ImportError as exc:
        raise EngineBuildError(
            f"the sparse-cpu native library is not built ({exc}); reinstall with `pip install -e .`"
        ) from None
    return _native
