"""Old path of ``sparsekit.masking.select.collapse`` (moved, issue 19): an alias of that module, so old imports keep working."""

import sys

from sparsekit.masking.select import collapse as _moved

sys.modules[__name__] = _moved
