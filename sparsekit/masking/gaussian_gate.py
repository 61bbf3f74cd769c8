"""Old path of ``sparsekit.masking.relax.gaussian_gate`` (moved, issue 19): an alias of that module, so old imports keep working."""

import sys

from sparsekit.masking.relax import gaussian_gate as _moved

sys.modules[__name__] = _moved
