"""Sparse formats: how a masked layer is stored/executed (structured, csr, nm, block).

Every format converts masked-dense weights and proves equality to masked-dense within its named
``atol`` (contract test over ``FORMATS``). Adding a format = one new file + one import line below.

Example:
    >>> from sparsekit.formats import convert_run
    >>> convert_run("runs/r20", "structured")["report"]["mac_ratio"]  # doctest: +SKIP
"""

from sparsekit.formats import block as _block  # noqa: F401,E402
from sparsekit.formats import csr as _csr  # noqa: F401,E402
from sparsekit.formats import nm as _nm  # noqa: F401,E402
from sparsekit.formats import structured as _structured  # noqa: F401,E402
from sparsekit.formats.base import FORMATS, Converted, SparseFormat, get_format, parse_block
from sparsekit.formats.store import convert_run, load_converted

__all__ = ["FORMATS", "Converted", "SparseFormat", "convert_run", "get_format", "load_converted", "parse_block"]
