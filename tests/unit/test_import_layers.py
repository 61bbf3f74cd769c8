"""The package's import graph: the contracts in .importlinter hold, and there is no import cycle inside
sparsekit/ (KNOWN_CYCLES may only shrink; it is empty since the cost package, issue 19)."""

from __future__ import annotations

import os
from pathlib import Path

import grimp
import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[2]

#: cycles that exist today, as sorted module tuples; remove an entry when its cycle is gone
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def _graph() -> nx.DiGraph:
    g = grimp.build_graph("sparsekit")
    dg = nx.DiGraph()
    for m in g.modules:
        for d in g.find_modules_directly_imported_by(m):
            if d != m:
                dg.add_edge(m, d)
    return dg


def test_no_new_import_cycles_and_known_ones_still_listed_only_while_they_exist():
    cycles = {tuple(sorted(c)) for c in nx.strongly_connected_components(_graph()) if len(c) > 1}
    assert cycles - KNOWN_CYCLES == set(), f"new import cycle(s): {sorted(cycles - KNOWN_CYCLES)}"
    assert KNOWN_CYCLES - cycles == set(), f"fixed, remove from KNOWN_CYCLES: {sorted(KNOWN_CYCLES - cycles)}"


def test_import_contracts_hold():
    pytest.importorskip("importlinter")
    from importlinter.application.use_cases import lint_imports

    cwd = os.getcwd()  # lint_imports reads .importlinter from the working directory
    os.chdir(ROOT)
    try:
        assert lint_imports() == 0  # 0 = every contract kept
    finally:
        os.chdir(cwd)
