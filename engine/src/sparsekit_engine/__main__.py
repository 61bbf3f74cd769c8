"""A tiny CLI to time an ONNX file on sparse-cpu without sparsekit or torch installed.

    python -m sparsekit_engine bench model.onnx --batch 1 --threads 1 [--json]
    python -m sparsekit_engine profile model.onnx --batch 1 [--top 10]

Bad input: one line on stderr, exit 2 (usage) or 1 (failure); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import numpy as np


def _shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-shape must be integers like 3,32,32, got {text!r}") from None
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"--input-shape dims must be >= 1, got {text!r}")
    return dims


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit 2 (argparse would print the whole usage block first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m sparsekit_engine",
                description="Time an ONNX classifier on sparse-cpu (no torch needed).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, help_text in (("bench", "latency and throughput at one batch size"),
                            ("profile", "where the time goes: measured µs per op")):
        c = sub.add_parser(name, help=help_text)
        c.add_argument("model", help="ONNX file")
        c.add_argument("--batch", type=_positive, default=1)
        c.add_argument("--threads", type=_positive, default=1)
        c.add_argument("--input-shape", type=_shape, default=None,
                       help="per-sample input shape for symbolic dims, e.g. 3,32,32")
        c.add_argument("--seconds", type=float, default=2.0, help="timing budget (default 2 s)")
        c.add_argument("--no-verify", action="store_true", help="skip the load-time parity check")
        c.add_argument("--json", action="store_true", help="print one JSON object instead of text")
        c.add_argument("--debug", action="store_true", help="show tracebacks")
        if name == "profile":
            c.add_argument("--top", type=_positive, default=10, help="ops to list (slowest first)")
    return p


def bench(session: Any, batch: int, seconds: float) -> dict[str, Any]:
    """Median / p90 latency (ms) of ``session.run`` on a seeded batch, after one warm-up run."""
    x = np.random.default_rng(0).standard_normal((batch, *session.input_shape)).astype(np.float32)
    session.run(x)  # warm-up: arenas, caches, thread team
    times: list[float] = []
    deadline = time.perf_counter() + max(seconds, 0.0)
    while len(times) < 5 or (time.perf_counter() < deadline and len(times) < 10_000):
        t0 = time.perf_counter()
        session.run(x)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    median = statistics.median(times)
    return {"batch": batch, "threads": session.threads, "isa": session.isa, "runs": len(times),
            "median_ms": median, "p90_ms": times[int(0.9 * (len(times) - 1))],
            "images_per_s": batch * 1e3 / median}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import sparsekit_engine as engine
    from sparsekit_engine.errors import SparsekitError

    try:
        session = engine.load(args.model, threads=args.threads, verify=not args.no_verify,
                              input_shape=args.input_shape)
        if args.command == "bench":
            result: dict[str, Any] = {"model": args.model, **bench(session, args.batch, args.seconds),
                                      "verification": session.verification}
            text = (f"{args.model}: batch {args.batch}, {session.threads} thread(s), {session.isa}: "
                    f"median {result['median_ms']:.3f} ms, p90 {result['p90_ms']:.3f} ms, "
                    f"{result['images_per_s']:.1f} images/s ({result['runs']} runs)")
        else:
            prof = session.profile(batch=args.batch, threads=args.threads, seconds=args.seconds)
            result = {"model": args.model, **prof}
            ops = sorted(prof["ops"], key=lambda o: -o["us"])[: args.top]
            lines = [f"{args.model}: batch {args.batch}, wall {prof['wall_us']:.1f} µs per run, "
                     f"outside the ops {prof['overhead_us']:.1f} µs"]
            lines += [f"  {o['us']:9.1f} µs {100 * o['share']:5.1f} %  {o['op']:<10} "
                      f"{o['kernel'] + ('/' + o['isa'] if o.get('isa') else ''):<14} {o['name']}" for o in ops]
            text = "\n".join(lines)
    except (SparsekitError, OSError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    print(json.dumps(result, default=str) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
