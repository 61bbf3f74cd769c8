"""Old path of ``sparsekit.masking.coupling.channel_space`` (moved, issue 19): an alias of that module, so old imports keep working."""

import sys

from sparsekit.masking.coupling import channel_space as _moved

sys.modules[__name__] = _moved
