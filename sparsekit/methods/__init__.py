"""Search methods: how a mask is found.

Adding a method = one new file in this package defining a ``SearchMethod`` subclass decorated with
``@METHODS.register("name")`` + one import line below. The contract tests in
tests/unit/test_methods_contract.py then cover it automatically.
"""

from sparsekit.methods import cts as _cts  # noqa: F401,E402
from sparsekit.methods import edge_popup as _edge_popup  # noqa: F401,E402
from sparsekit.methods import gates as _gates  # noqa: F401,E402
from sparsekit.methods import grasp as _grasp  # noqa: F401,E402
from sparsekit.methods import ltr as _ltr  # noqa: F401,E402
from sparsekit.methods import magnitude as _magnitude  # noqa: F401,E402
from sparsekit.methods import magnitude_channel as _magnitude_channel  # noqa: F401,E402

# registration imports (one line per method file)
from sparsekit.methods import random as _random  # noqa: F401,E402
from sparsekit.methods import random_channel as _random_channel  # noqa: F401,E402
from sparsekit.methods import snip as _snip  # noqa: F401,E402
from sparsekit.methods import synflow as _synflow  # noqa: F401,E402
from sparsekit.methods import tp_group_norm as _tp_group_norm  # noqa: F401,E402
from sparsekit.methods import tp_taylor as _tp_taylor  # noqa: F401,E402
from sparsekit.methods.base import (
    METHODS,
    NoOptions,
    ScoreMethod,
    SearchContext,
    SearchMethod,
    SearchResult,
    get_method,
    parse_options,
)

__all__ = [
    "METHODS",
    "NoOptions",
    "ScoreMethod",
    "SearchContext",
    "SearchMethod",
    "SearchResult",
    "get_method",
    "parse_options",
]
