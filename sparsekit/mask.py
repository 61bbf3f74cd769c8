"""Old path of ``sparsekit.binary_mask`` (moved, issue 19): an alias of that module, so old imports keep working."""

import sys

from sparsekit import binary_mask as _moved

sys.modules[__name__] = _moved
