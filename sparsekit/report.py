"""Old path of ``sparsekit.run_report`` (moved, issue 19): an alias of that module, so old imports keep working."""

import sys

from sparsekit import run_report as _moved

sys.modules[__name__] = _moved
