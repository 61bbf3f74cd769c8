"""sparse-cpu sessions: load an ONNX classifier, plan it, verify it, run and profile it.

The public API and its documentation are in the package (``sparsekit_engine``); the tunables
(VERIFY_ATOL, VERIFY_RTOL, VERIFY_BATCH, PAR_MIN_MACS) live there too and are read at call time, so
setting ``sparsekit_engine.VERIFY_ATOL`` changes the next load.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

import sparsekit_engine as _pkg  # the tunables, read at call time
from sparsekit_engine.errors import (
    EngineError,
    EngineInputError,
    EngineUnsupported,
    EngineVerifyError,
)
from sparsekit_engine.native import lib

_lib = lib  # the native module (sparsekit_engine.native.lib)


def available_isas() -> list[str]:
    """ISA variants usable on this CPU, best first (e.g. ['avx512', 'avx2', 'baseline'])."""
    return list(_lib().available_isas())


def load(path: str | os.PathLike, threads: int = 1, verify: bool = True, verify_input: np.ndarray | None = None,
         cache: bool | None = None, isa: str | None = None, input_shape: tuple[int, ...] | None = None,
         kernels: str = "auto", interleave: bool | None = None) -> Session:
    """Load an ONNX classifier into a verified sparse-cpu Session (see the module docstring).

    ``interleave``: batches of >= vector-width images in the interleaved layout (images in the vector lanes,
    planner.interleaved_tensors): None (default, or env SPARSEKIT_ENGINE_INTERLEAVE=auto) when it measures
    faster at load, True whenever the graph allows it, False never (kernels="dense-oc": never)."""
    return Session(path, threads=threads, verify=verify, verify_input=verify_input, cache=cache, isa=isa,
                   input_shape=input_shape, kernels=kernels, interleave=interleave)


#: ``kernels=``: auto (the fastest of sparse / dense per layer, timed at load), sparse, dense (the faster
#: dense form per layer), or one dense form for every conv that has it: dense-blocked (blocks of output
#: channels x vectors of positions) or dense-oc (output channels in the vector lanes). The form is what one
#: image runs; a small-map dense conv may also tile a chunk's images together (native conv_dense_multi, on
#: the blocked weights, kept next to the oc ones then) where that measures faster: plan()'s "batched"
KERNEL_MODES = ("auto", "sparse", "dense", "dense-blocked", "dense-oc")
DENSE_FORMS = {"blocked": 1, "oc": 2}  # native variant of each dense conv form


class Session:
    """A loaded plan. Use ``load()``; ``run``/``plan`` are the stable API."""

    def __init__(self, path: str | os.PathLike, threads: int = 1, verify: bool = True,
                 verify_input: np.ndarray | None = None, cache: bool | None = None, isa: str | None = None,
                 input_shape: tuple[int, ...] | None = None, kernels: str = "auto",
                 interleave: bool | None = None) -> None:
        from sparsekit_engine import planner as P
        from sparsekit_engine.graph import load_graph

        native = _lib()
        self.path = str(path)
        if int(threads) < 1:
            raise EngineError(f"threads must be >= 1, got {threads}")
        self.threads = int(threads)
        isa = isa or os.environ.get("SPARSEKIT_ENGINE_ISA") or "auto"
        avail = list(native.available_isas())
        if isa != "auto" and isa not in avail:
            raise EngineError(f"ISA '{isa}' is not available here (available: {', '.join(avail)})")
        if kernels not in KERNEL_MODES:
            raise EngineError(f"kernels must be one of {', '.join(repr(k) for k in KERNEL_MODES)}, got {kernels!r}")
        self.kernels = kernels
        if cache is None:
            cache = os.environ.get("SPARSEKIT_ENGINE_CACHE", "1") not in ("0", "false", "no", "off")
        graph = load_graph(path)
        self.input_name = graph.input_name
        dims = graph.input_shape[1:]
        if input_shape is not None:
            dims = tuple(int(v) for v in input_shape)
        if len(graph.input_shape) < 2 or any(d is None or d <= 0 for d in dims):
            raise EngineUnsupported(
                f"input '{graph.input_name}' has shape {graph.input_shape}; sparse-cpu needs fixed per-sample dims "
                "(pass input_shape=...)"
            )
        self.input_shape = tuple(int(d) for d in dims)
        b0 = graph.input_shape[0]
        self.fixed_batch = int(b0) if isinstance(b0, int) and b0 > 0 else None
        nodes, shapes, out = P.lower(graph, self.input_shape)
        nodes = P.fuse(nodes, out, shapes)
        self.output_shape = tuple(shapes[out])
        lay = P.plan_layouts(nodes, shapes, graph.input_name)
        has_fc = any(n.kind == "fc" for n in nodes)
        bc = 1
        arena = P.plan_memory(nodes, lay, graph.input_name, out, 1)
        eng = native.Engine(isa)
        if has_fc and arena * 4 * P.CHUNK_IMAGES <= P.CHUNK_MAX_BYTES:
            bc = P.CHUNK_IMAGES
        elif any(P.small_map_conv(n, lay, eng.vector_width) for n in nodes):
            # small-map sparse convs tile several images per register block (see planner.small_map_conv)
            bc = max([1] + [b for b in P.CONV_CHUNKS if arena * 4 * b <= P.CONV_CHUNK_MAX_BYTES])
        if bc > 1:
            arena = P.plan_memory(nodes, lay, graph.input_name, out, bc)
        self.chunk = bc
        self.isa = eng.isa
        # ISAs the sparse kernels may take per layer (timed at load): only when the ISA is not pinned, and
        # only at or below the engine's (their format is ISA-independent; see native set_sparse_isa). The
        # baseline is never a candidate next to a vector ISA.
        below = avail[avail.index(eng.isa) + 1:] if isa == "auto" else []
        self.sparse_isas = [eng.isa] + [i for i in below if i != "baseline"]
        used = [graph.input_name] + [t for n in nodes for t in n.inputs + [n.output] + ([n.res] if n.res else [])]
        ti: dict[str, int] = {}
        for t in used:
            if t not in ti:
                L = lay[t]
                ti[t] = eng.add_tensor([L.C, L.H, L.W, L.pt, L.pb, L.pl, L.pr, L.off, L.istride])
        shared, private = 1024, 1024
        built = []
        for n in nodes:
            op = P.build_op(n, lay, ti, shapes, eng.dense_ob, eng.oc_channels if kernels != "dense-blocked" else 0)
            ip, info = op.ip, op.info
            shared = max(shared, int(info.get("scratch_shared", 0)))
            private = max(private, int(info.get("scratch_private", 0)))
            idx = eng.add_op(op.code, op.ip, op.fp, op.fa, op.ua)
            built.append((n, idx, ip, info))
        eng.set_memory(ti[graph.input_name], ti[out], bc, arena + shared, arena, shared, private)
        self._engine = eng
        self._plan = self._choose_kernels(built, bool(cache), P)
        self.macs_per_sample = int(sum(e["macs_sparse"] or 0 for e in self._plan))
        self._par_min = int(os.environ.get("SPARSEKIT_ENGINE_PAR_MIN_MACS", _pkg.PAR_MIN_MACS))
        eng.set_work(self.macs_per_sample, self._par_min)
        # batches of >= il_lanes images: the interleaved plan (planner.interleaved_tensors) when it qualifies
        # and measures faster (interleave=None; True: whenever it qualifies, False: never)
        self._il = None
        self.il_lanes = 0
        self.il_isa: str | None = None
        self.il_row_chains = False  # the interleaved plan runs its consecutive convs as row wavefronts
        self.il_kernels: list[str | None] = [None] * len(nodes)
        self.interleave_us: dict[str, float] = {}
        if interleave is None:
            env = os.environ.get("SPARSEKIT_ENGINE_INTERLEAVE", "auto")
            interleave = None if env == "auto" else env not in ("0", "false", "no", "off")
        trunk = P.interleaved_tensors(nodes, graph.input_name, out, shapes) if interleave is not False else None
        if trunk and kernels != "dense-oc":
            # candidates: the session's ISA and, when the ISA is not pinned, the next narrower vector ISA
            # (AVX-512 -> AVX2: chunks of 8 images instead of 16, so a chunk's tensors are half the size and
            # stay in L2 where 16 do not; twice the FMAs per image, though). Which wins depends on the model:
            # resnet20 at 99 % took AVX2's until its residual convs stored over their residuals, AVX-512's
            # since (docs/benchmarks.md, 2026-12-06)
            isas = [self.isa] + ([self.sparse_isas[1]] if interleave is None and len(self.sparse_isas) > 1 else [])
            cands = {i: self._build_interleaved(P, nodes, shapes, lay, graph.input_name, out, trunk, bool(cache), i)
                     for i in isas}
            pick, chains = (self.isa, True) if interleave else self._pick_interleaved(cands, P, cache)
            if pick is not None:
                self._il, self.il_kernels = cands[pick]
                self.il_lanes, self.il_isa = self._il.vector_width, pick
                self._il.set_row_chains(chains)
                self.il_row_chains = chains
        self.verification: dict[str, Any] = {"verified": False}
        if verify:
            self.verification = self._verify(verify_input)

    # ------------------------------------------------------------------ interleaved batch layout
    def _build_interleaved(self, P: Any, nodes: list, shapes: dict, planar_lay: dict, input_name: str, out: str,
                           trunk: set[str], use_cache: bool, isa: str) -> tuple[Any, list[str | None]]:
        """The plan for batches in the interleaved layout on ``isa`` (its vector width = images per chunk): the
        trunk's convs on native conv_il (sparse) or conv_il_dense, the faster at a chunk of lanes
        (kernels="auto": timed per layer, cached like the planar choices; "sparse" / "dense*": that one);
        everything after the trunk as the planar plan chose (same kernels; sparse ones at most ``isa`` wide).
        Returns (native plan, per op: a trunk conv's kernel)."""
        eng = _lib().Engine(isa)
        K = eng.vector_width
        lay = P.interleaved_layouts(nodes, shapes, input_name, trunk, K)
        arena = P.plan_memory(nodes, lay, input_name, out, K, group=trunk, il_lanes=K)
        ti: dict[str, int] = {}
        for t in [input_name] + [t for n in nodes for t in n.inputs + [n.output] + ([n.res] if n.res else [])]:
            if t not in ti:
                L = lay[t]
                ti[t] = eng.add_tensor([L.C, L.H, L.W, L.pt, L.pb, L.pl, L.pr, L.off, L.istride, K if t in trunk else 0])
        shared, private = 1024, 1024
        trunk_convs = []
        for n, entry in zip(nodes, self._plan, strict=True):
            if n.kind == "conv" and n.inputs[0] in trunk:
                code = P.native_codes()[0]["conv"]
                ip, fp, fa, ua, info = P.build_conv_il(n, lay, ti, K, eng.dense_ob)
                idx = eng.add_op(code, ip, fp, fa, ua)
                trunk_convs.append((n, idx, ip))
                continue
            op = P.build_op(n, lay, ti, shapes, eng.dense_ob, 0)
            ip = op.ip
            if n.kind == "gap" and n.inputs[0] in trunk:  # the planar plan's run structure (native gap_il)
                Lp = planar_lay[n.inputs[0]]
                ip = ip + [1 if Lp.Wp == Lp.W else 0]
            shared = max(shared, int(op.info.get("scratch_shared", 0)))
            private = max(private, int(op.info.get("scratch_private", 0)))
            idx = eng.add_op(op.code, ip, op.fp, op.fa, op.ua)
            if n.kind in ("conv", "fc"):  # the planar plan's choice (the oc form is not packed here)
                v = 0 if entry["kernel"] == "sparse" else 1
                sp = entry.get("isa", self.isa)
                eng.set_sparse_isa(idx, sp if v == 0 and sp in self.sparse_isas[self.sparse_isas.index(isa):] else isa)
                eng.set_variant(idx, v)
                eng.keep_variant(idx, v)
        eng.set_memory(ti[input_name], ti[out], K, arena + shared, arena, shared, private)
        eng.set_work(self.macs_per_sample, self._par_min)
        cache = P.ChoiceCache(use_cache)
        il_kernels: list[str | None] = [None] * len(nodes)  # per op: a trunk conv's kernel in the plan
        pos = {id(n): i for i, n in enumerate(nodes)}
        for n, idx, ip in trunk_convs:
            if self.kernels == "sparse":
                v = 0
            elif self.kernels != "auto":
                v = 1
            else:
                key = P.layer_key(n, ip, isa + ":il", self.threads, K)
                hit = cache.get(key)
                if hit is None:
                    # sparse in one pass, sparse by input-channel blocks (when packed), dense
                    cands = ["sparse"] + (["sparse-blocks"] if eng.has_il_blocks(idx) else []) + ["dense"]
                    t = {k: float("inf") for k in cands}
                    for _ in range(2):  # alternated: robust to a busy machine
                        for k in cands:
                            eng.set_il_blocks(idx, k == "sparse-blocks")
                            t[k] = min(t[k], self._time(idx, 1 if k == "dense" else 0, K, eng, rounds=2))
                    best = min(t, key=t.get)
                    hit = {"variant": 1 if best == "dense" else 0, "blocks": best == "sparse-blocks", "us": t}
                    cache.put(key, hit)
                v = int(hit["variant"])
                eng.set_il_blocks(idx, bool(hit.get("blocks", False)))
            if self.kernels != "auto":
                eng.set_il_blocks(idx, True)
            eng.set_variant(idx, v)
            eng.keep_variant(idx, v)
            il_kernels[pos[id(n)]] = "sparse" if v == 0 else "dense"
        cache.save()
        return eng, il_kernels

    def _pick_interleaved(self, cands: dict[str, tuple[Any, list]], P: Any,
                          use_cache: bool) -> tuple[str | None, bool]:
        """Time the planar plan and each interleaved candidate (by ISA, with and without row wavefronts) on the
        same images (2 chunks of the widest lanes; alternated, best of 5 each); returns (the ISA of the
        interleaved plan to use, or None for planar; whether it runs row wavefronts). An interleaved plan must
        beat planar by 5 %; between interleaved ones the faster wins. Cached per model, ISAs and threads like
        the per-layer choices. ``interleave_us``: "planar", "interleaved" (the session's ISA) and
        "interleaved-<isa>" for a narrower one, each also with " op-by-op" (row wavefronts off). Row wavefronts
        are timed, not assumed: they took resnet20 at 99 % from 3155 to 2878 µs per 64 images, but mobilenet_v2
        at 0 % (1x1 expand convs writing 15 MB chunk tensors) timed 40.5 ms with them and 35.0 ms without per 32
        images at load (an in-process A/B at 16 images: within noise)."""
        K = max(e.vector_width for e, _ in cands.values())
        keys = "|".join(str(e.get("name")) + str(e.get("kernel")) + str(e.get("nnz")) for e in self._plan)
        ils = ";".join(f"{i}:{'|'.join(str(k) for k in ks)}" for i, (_, ks) in cands.items())
        key = f"il:{hashlib.sha256((self.path + keys).encode()).hexdigest()[:24]}:{self.isa}:{self.threads}:{K}:" \
              f"{P.KERNEL_VERSION}:{ils}"
        cache = P.ChoiceCache(use_cache)
        hit = cache.get(key)
        if hit is not None and "pick" in hit and "chains" in hit:
            self.interleave_us = dict(hit.get("us", {}))
            return hit["pick"], bool(hit["chains"])
        name = {i: "interleaved" if i == self.isa else f"interleaved-{i}" for i in cands}
        x = np.random.default_rng(0).standard_normal((2 * K, *self.input_shape)).astype(np.float32)
        runs: dict[str, tuple[Any, str | None, bool]] = {"planar": (self._engine, None, False)}
        for i, (e, _) in cands.items():
            runs[name[i]] = (e, i, True)
            runs[name[i] + " op-by-op"] = (e, i, False)
        best = {k: float("inf") for k in runs}
        for r in range(6):
            for k, (e, isa, chains) in runs.items():
                if isa is not None:
                    e.set_row_chains(chains)
                t = time.perf_counter()
                e.run(x, self.threads)
                if r:  # the first round warms up
                    best[k] = min(best[k], (time.perf_counter() - t) * 1e6)
        self.interleave_us = {k: round(v, 1) for k, v in best.items()}
        fastest = min((k for k in runs if k != "planar"), key=lambda k: best[k])
        _, isa, chains = runs[fastest]
        pick = isa if best[fastest] < 0.95 * best["planar"] else None
        cache.put(key, {"pick": pick, "chains": chains, "us": self.interleave_us})
        cache.save()
        return pick, chains

    def _engine_for(self, n: int) -> tuple[Any, int]:
        """(native plan, images it runs) for a batch of n: the interleaved plan takes whole chunks of lanes."""
        if self._il is not None and n >= self.il_lanes:
            return self._il, n - n % self.il_lanes
        return self._engine, n

    # ------------------------------------------------------------------ kernel choice
    def _choose_kernels(self, built: list, use_cache: bool, P: Any) -> list[dict]:
        cache = P.ChoiceCache(use_cache)
        plan = []
        # dense convs whose per-image form is settled in the whole plan: (plan position, op, cache key, batched)
        settle: list[tuple[int, int, str | None, bool]] = []
        for n, idx, ip, info in built:
            entry: dict[str, Any] = {"name": n.name, "op": n.onnx_op, "fused": list(n.fused), "kind": n.kind,
                                     "kernel": "direct", "density": None, "macs_dense": None, "macs_sparse": None,
                                     "us": {}, "cached": False}
            if n.kind in ("conv", "fc"):
                key = P.layer_key(n, ip, "+".join(self.sparse_isas), self.threads, self.chunk)
                hit = cache.get(key) if self.kernels == "auto" else None
                batched = False
                nb = self.chunk if n.kind == "fc" else 1
                sparse_isa, form = self.isa, "blocked"
                if self.kernels != "auto":
                    choice = "sparse" if self.kernels == "sparse" else "dense"
                    us = {}
                    if choice == "sparse" and len(self.sparse_isas) > 1:
                        us["sparse"], sparse_isa = self._time_sparse(idx, nb)
                    elif self.kernels == "dense-oc" and self._engine.has_oc(idx):
                        form = "oc"
                    elif self.kernels == "dense" and self._engine.has_oc(idx):
                        us["dense"], form = self._time_dense(idx, nb)
                    if choice == "dense" and n.kind == "conv":  # image-batched tiles for chunks (blocked)
                        batched = self._batched_faster(idx, ip, P, DENSE_FORMS[form])
                elif hit is None:
                    us = {}
                    us["sparse"], sparse_isa = self._time_sparse(idx, nb)
                    us["dense"], form = self._time_dense(idx, nb)
                    choice = min(us, key=us.get)
                    batched = choice == "dense" and n.kind == "conv" and \
                        self._batched_faster(idx, ip, P, DENSE_FORMS[form])
                    cache.put(key, {"kernel": choice, "us": us, "batched": batched, "sparse_isa": sparse_isa,
                                    "dense_form": form})
                else:
                    us, choice = hit["us"], hit["kernel"]
                    batched = bool(hit.get("batched", False))
                    sparse_isa = hit.get("sparse_isa", self.isa)
                    if sparse_isa not in self.sparse_isas:
                        sparse_isa = self.isa
                    form = hit.get("dense_form", "blocked")
                    if form == "oc" and not self._engine.has_oc(idx):
                        form = "blocked"
                    entry["cached"] = True
                if choice == "sparse":
                    self._engine.set_sparse_isa(idx, sparse_isa)
                    entry["isa"] = sparse_isa
                else:
                    self._engine.set_sparse_isa(idx, self.isa)
                    entry["isa"] = self.isa
                    if n.kind == "conv":
                        entry["dense_form"] = form
                v = 0 if choice == "sparse" else DENSE_FORMS[form]
                self._engine.set_variant(idx, v)
                fresh = self.kernels == "dense" or (self.kernels == "auto" and hit is None)
                if fresh and choice == "dense" and n.kind == "conv" and self._engine.has_oc(idx):
                    settle.append((len(plan), idx, key if self.kernels == "auto" else None, bool(batched)))
                else:
                    self._keep_variant(idx, v, batched)
                self._engine.set_batched(idx, bool(batched))
                entry.update(kernel=choice, batched=bool(batched), us={k: round(float(x), 3) for k, x in us.items()},
                             density=info["nnz"] / max(info["numel"], 1), macs_dense=info["macs_dense"],
                             macs_sparse=info["macs_sparse"] if choice == "sparse" else info["macs_dense"],
                             nnz=info["nnz"])
            plan.append(entry)
        if settle:
            self._settle_dense_forms(settle, plan, cache)
        cache.save()
        return plan

    def _settle_dense_forms(self, settle: list[tuple[int, int, str | None, bool]], plan: list[dict],
                            cache: Any) -> None:
        """Pick each dense conv's per-image form (blocked / oc) from the whole plan's run, not from the op alone.

        Timed alone, an op's weights stay in cache between repetitions; in the model they come from memory
        after the other layers ran, and the forms differ most there (vgg16 at 0 %: the 4x4 / 2x2 layers'
        9.4 MB of weights: the blocked form re-reads a unit's weights for every position tile, the oc form
        reads each tap chunk once and reuses it from L1). So the plan runs with every candidate in one form, then the other (per-op times from
        the native profiler, median of a few runs, alternated), and each op keeps its faster form. An op whose
        chunks run image-batched tiles (``batched``: the blocked weights, conv_dense_multi) uses its per-image
        form only for a single image, so its form is timed on a plan run of one image, and it keeps both
        forms' weights when that is oc (before, such a conv was pinned to the blocked form and its oc weights
        freed, whichever ran one image faster)."""
        eng = self._engine
        x = np.random.default_rng(0).standard_normal((self.chunk, *self.input_shape)).astype(np.float32)
        batches = [x] + ([x[:1]] if self.chunk > 1 and any(b for *_, b in settle) else [])
        times: dict[tuple[str, int], list[np.ndarray]] = {}
        eng.run(x, 1)  # warm-up
        for _ in range(3):
            for form in ("blocked", "oc"):
                for _, idx, _, _ in settle:
                    eng.set_variant(idx, DENSE_FORMS[form])
                for xb in batches:
                    eng.set_profiling(True, 1)
                    try:
                        eng.run(xb, 1)
                        times.setdefault((form, len(xb)), []).append(np.asarray(eng.profile()))
                    finally:
                        eng.set_profiling(False, 1)
        med = {k: np.median(np.stack(v), axis=0) for k, v in times.items()}
        for pos, idx, key, batched in settle:
            nb = 1 if batched else len(x)
            form = min(("blocked", "oc"), key=lambda f: med[(f, nb)][idx])
            eng.set_variant(idx, DENSE_FORMS[form])
            self._keep_variant(idx, DENSE_FORMS[form], batched)
            plan[pos]["dense_form"] = form
            plan[pos]["us_in_plan"] = {f: round(float(med[(f, nb)][idx]), 3) for f in ("blocked", "oc")}
            if key is not None and cache.get(key) is not None:
                cache.put(key, {**cache.get(key), "dense_form": form})

    def _keep_variant(self, idx: int, v: int, batched: bool) -> None:
        """Free the formats op ``idx`` will not run: all but ``v``, and the blocked one too unless its chunks
        run image-batched tiles (conv_dense_multi reads the blocked weights whatever one image runs)."""
        blocked = DENSE_FORMS["blocked"]
        self._engine.keep_variant(idx, v, blocked if batched and v != blocked else -1)

    def _time_sparse(self, idx: int, nb: int) -> tuple[float, str]:
        """The sparse kernel's time under each candidate ISA (``sparse_isas``): (fastest us, its ISA)."""
        best = (float("inf"), self.isa)
        for isa in self.sparse_isas:
            self._engine.set_sparse_isa(idx, isa)
            t = self._time(idx, 0, nb)
            if t < best[0]:
                best = (t, isa)
        self._engine.set_sparse_isa(idx, best[1])
        return best

    def _batched_faster(self, idx: int, ip: list[int], P: Any, variant: int = 1) -> bool:
        """Dense small-map conv: do image-batched tiles (native conv_dense_multi, blocked form) beat per-image
        calls of dense ``variant`` at the chunk's batch? Timed here (both ways, the engine left per-image),
        since it depends on the layer's shape."""
        if self.chunk < 2 or not P.batched_candidate(ip, self._engine.vector_width):
            return False
        t = {}
        for on in (False, True, False, True):  # alternated: robust to a busy machine
            self._engine.set_batched(idx, on)
            t[on] = min(t.get(on, 1e30), self._time(idx, 1 if on else variant, self.chunk))
        self._engine.set_batched(idx, False)
        return t[True] < t[False]

    def _time_dense(self, idx: int, nb: int) -> tuple[float, str]:
        """The dense kernel's time in each form the op has (blocked; oc when packed): (fastest us, its form)."""
        forms = ["blocked"] + (["oc"] if self._engine.has_oc(idx) else [])
        t = {f: self._time(idx, DENSE_FORMS[f], nb) for f in forms}
        best = min(t, key=t.get)
        return t[best], best

    def _time(self, idx: int, variant: int, nb: int, eng: Any = None, rounds: int = 3) -> float:
        """Best of ``rounds`` of ~1.5 ms of op ``idx`` of ``eng`` (default: the planar plan) in ``variant``."""
        eng = self._engine if eng is None else eng
        t = eng.time_op(idx, variant, nb, 1, 1)
        reps = int(min(200, max(1, 1500.0 / max(t, 1e-3))))
        return float(eng.time_op(idx, variant, nb, reps, rounds))

    # ------------------------------------------------------------------ verification
    def _verify_batch(self, verify_input: np.ndarray | None) -> np.ndarray:
        if verify_input is not None:
            return self._check_input(verify_input)
        n = self.fixed_batch or _pkg.VERIFY_BATCH
        return np.random.default_rng(0).standard_normal((n, *self.input_shape)).astype(np.float32)

    def _verify(self, verify_input: np.ndarray | None) -> dict[str, Any]:
        x = self._verify_batch(verify_input)
        reference = "onnxruntime"
        try:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = self.threads
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            sess = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])
            ref = sess.run(None, {self.input_name: x})[0]
            del sess
        except ImportError:
            ref = None
        except Exception as exc:  # ORT cannot load it (e.g. too new an IR version): numpy reference instead
            reference = f"numpy (onnxruntime failed: {type(exc).__name__})"
            ref = None
        if ref is None:
            from sparsekit_engine.reference import run_reference

            if reference == "onnxruntime":
                reference = "numpy (onnxruntime not installed)"
            ref = run_reference(self.path, x)
        got = self.run(x)
        ref = np.asarray(ref, np.float32).reshape(got.shape)
        err = float(np.max(np.abs(got.astype(np.float64) - ref))) if got.size else 0.0
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        tol = _pkg.VERIFY_ATOL + _pkg.VERIFY_RTOL * scale
        flat = ref.reshape(ref.shape[0], -1)
        vacuous = bool(ref.size == 0 or np.ptp(ref) == 0.0 or (flat.shape[0] > 1 and np.all(flat == flat[0])))
        res = {"verified": True, "reference": reference, "max_abs_err": err, "atol": _pkg.VERIFY_ATOL,
               "rtol": _pkg.VERIFY_RTOL, "tolerance": tol, "max_abs_ref": scale, "batch": int(x.shape[0]),
               "vacuous": vacuous}
        if vacuous:
            res["note"] = "the reference outputs are all equal/constant, so agreement proves little"
        if not np.isfinite(err) or err > tol:
            raise EngineVerifyError(
                f"sparse-cpu output differs from {reference} on {self.path}: max|diff| {err:.3g} > tolerance "
                f"{tol:.3g} (batch {x.shape[0]})"
            )
        return res

    # ------------------------------------------------------------------ run
    def _check_input(self, x: Any) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        if x.dtype != np.float32:
            if x.dtype in (np.float64, np.float16):
                x = x.astype(np.float32)
            else:
                raise EngineInputError(f"expected input {self._want()}, got {tuple(x.shape)} {x.dtype}")
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise EngineInputError(f"expected input {self._want()}, got {tuple(x.shape)} {x.dtype}")
        return np.ascontiguousarray(x)

    def _want(self) -> str:
        return f"(N, {', '.join(str(d) for d in self.input_shape)}) float32"

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run a batch: float32 (N, *input_shape) -> float32 (N, *output_shape)."""
        x = self._check_input(x)
        n = x.shape[0]
        if n == 0:
            return np.zeros((0, *self.output_shape), np.float32)
        eng, m = self._engine_for(n)
        y = eng.run(x[:m] if m < n else x, self.threads)
        if m < n:  # the images past the last whole chunk of lanes: the planar plan (the same results per image)
            y = np.concatenate([y, self._engine.run(x[m:], self.threads)])
        return y.reshape((n, *self.output_shape))

    __call__ = run

    def plan(self, profile: bool = False, batch: int = 1, threads: int | None = None) -> list[dict]:
        """Per executed op: name, op, fused, kernel, density, macs_dense, macs_sparse, us, cached (conv/fc: batched,
        isa: the ISA of the chosen kernel; a sparse kernel may run a narrower ISA than the session's when timed faster).

        ``profile=True`` adds ``measured_us`` / ``measured_share``: the op's measured wall time per run of
        ``batch`` images at ``threads`` (default: the session's), from the native per-op profiler
        (see ``profile``). When batches of >= ``il_lanes`` images run in the interleaved layout, the trunk's
        convs carry ``interleaved_kernel`` (sparse / dense): their kernel there."""
        entries = [dict(e, us=dict(e["us"]), fused=list(e["fused"])) for e in self._plan]
        if self._il is not None:
            for e, k in zip(entries, self.il_kernels, strict=True):
                if k:
                    e["interleaved_kernel"] = k
        if profile:
            prof = self.profile(batch=batch, threads=threads)
            for e, p in zip(entries, prof["ops"], strict=True):
                e["measured_us"], e["measured_share"] = p["us"], p["share"]
        return entries

    def profile(self, batch: int = 1, threads: int | None = None, seconds: float = 0.3,
                x: np.ndarray | None = None) -> dict[str, Any]:
        """Where the time goes: run ``batch`` images repeatedly (~``seconds``) under the native per-op profiler.

        Times are medians over the runs (per op, and of the whole run). Returns batch, threads, runs,
        wall_us (per run), ops_us (sum over ops, per run), overhead_us
        (wall - ops: input/output copies, dispatch) and ``ops``: one dict per executed op (same order as
        ``plan()``) with name, op, kind, kernel, macs (executed per image), us (wall per run; image-parallel
        runs: the workers' summed op time divided by the threads) and share (of ops_us)."""
        import time

        threads = self.threads if threads is None else int(threads)
        if threads < 1 or int(batch) < 1:
            raise EngineError(f"profile needs batch >= 1 and threads >= 1, got {batch}, {threads}")
        if x is None:
            x = np.random.default_rng(0).standard_normal((int(batch), *self.input_shape)).astype(np.float32)
        x = self._check_input(x)
        eng, m = self._engine_for(x.shape[0])  # the plan run() uses for this batch (whole chunks of lanes)
        x = x[:m]
        interleaved = eng is not self._engine
        chunk = self.il_lanes if interleaved else self.chunk
        eng.run(x, threads)  # warm-up (arenas, thread pool)
        t = time.perf_counter()
        eng.run(x, threads)
        runs = max(5, min(1000, int(seconds / max(time.perf_counter() - t, 1e-6))))
        walls, per_run = [], []
        try:
            for _ in range(runs):  # per-op median over runs: robust to the run being descheduled
                eng.set_profiling(True, threads)
                t = time.perf_counter()
                eng.run(x, threads)
                walls.append((time.perf_counter() - t) * 1e6)
                per_run.append(list(eng.profile()))
        finally:
            eng.set_profiling(False, threads)
        wall = float(np.median(walls))
        raw = np.median(np.asarray(per_run), axis=0) if per_run[0] else np.zeros(0)
        image_parallel = threads > 1 and -(-x.shape[0] // chunk) >= 2
        div = min(threads, -(-x.shape[0] // chunk)) if image_parallel else 1
        us = [float(v) / div for v in raw]
        total = sum(us) or 1.0
        ops = [{"name": e["name"], "op": e["op"], "kind": e["kind"], "kernel": e["kernel"], "isa": e.get("isa"),
                "macs": e["macs_sparse"],
                "us": round(u, 3), "share": u / total} for e, u in zip(self._plan, us, strict=True)]
        if interleaved:  # the trunk's convs ran conv_il / conv_il_dense (the interleaved plan's ISA)
            for o, e, k in zip(ops, self._plan, self.il_kernels, strict=True):
                if k:
                    o.update(kernel=k, isa=self.il_isa,
                             macs=int(round(e["density"] * e["macs_dense"])) if k == "sparse" else e["macs_dense"])
        return {"batch": int(x.shape[0]), "threads": threads, "runs": runs, "wall_us": wall, "ops_us": sum(us),
                "overhead_us": wall - sum(us), "layout": "interleaved" if interleaved else "planar", "ops": ops}

    def memory(self) -> dict[str, int]:
        """Bytes held natively: weights (chosen formats only) and activation arenas (one per thread), the
        interleaved plan's included when the session has one."""
        engines = [self._engine] + ([self._il] if self._il is not None else [])
        return {"weight_bytes": int(sum(e.weight_bytes() for e in engines)),
                "arena_bytes": int(sum(e.arena_bytes() for e in engines))}

    def __repr__(self) -> str:
        return (f"<sparse-cpu Session {Path(self.path).name}: isa={self.isa} threads={self.threads} "
                f"input={self.input_shape} ops={len(self._plan)}>")
