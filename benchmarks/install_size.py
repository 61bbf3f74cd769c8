"""Installed size of a distribution and its runtime dependency closure, as installed in this environment.

    .venv/bin/python benchmarks/install_size.py sparsekit-engine sparsekit

Sums the sizes of the files each installed distribution's RECORD lists (its own files, not shared caches),
over the distribution and every run-time requirement reachable from it (extras not taken; markers evaluated).
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys

from packaging.requirements import Requirement


def closure(name: str) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        dist_name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if dist_name in seen:
            continue
        try:
            dist = md.distribution(dist_name)
        except md.PackageNotFoundError:
            continue
        seen.add(dist_name)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def size_mb(dist_name: str) -> float:
    files = md.distribution(dist_name).files or []
    return sum((f.size or 0) for f in files) / 2**20


def main(names: list[str]) -> None:
    for name in names:
        dists = sorted(closure(name))
        own = size_mb(name)
        total = sum(size_mb(d) for d in dists)
        big = sorted(((size_mb(d), d) for d in dists), reverse=True)[:4]
        print(f"{name}: own {own:.1f} MB; with its {len(dists) - 1} run-time dependencies {total:.0f} MB "
              f"(largest: {', '.join(f'{d} {s:.0f} MB' for s, d in big)})")


if __name__ == "__main__":
    main(sys.argv[1:] or ["sparsekit-engine", "sparsekit"])
