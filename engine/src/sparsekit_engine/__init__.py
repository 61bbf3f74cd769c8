"""sparse-cpu: a native sparse inference engine for ONNX classifier graphs (no torch at run time).

Unstructured-sparse tickets (e.g. 99 % zeros in conv weights) run several times faster than dense ONNX
Runtime: convolutions are computed directly from per-output-channel lists of non-zeros (no im2col) on
zero-padded activation planes, with BatchNorm folded and bias/residual-add/activation fused into each
kernel's epilogue; every Conv/Gemm/MatMul gets the faster of a sparse and a dense kernel, decided by timing
both at load (cached); the whole plan runs in one native call per inference.

API (stable):

    >>> import sparsekit_engine as engine                # or: from sparsekit import engine
    >>> s = engine.load("ticket.onnx", threads=1)        # verifies against ONNX Runtime  # doctest: +SKIP
    >>> y = s.run(x)                                     # x: float32 (N, C, H, W) or (N, F)  # doctest: +SKIP
    >>> s.plan()                                         # per layer: kernel, density, MACs, µs  # doctest: +SKIP
    >>> s.profile(batch=1)["ops"]                        # measured wall µs per op  # doctest: +SKIP
    >>> s.isa, s.threads, s.verification                 # doctest: +SKIP

``load(path, threads=1, verify=True, verify_input=None, cache=None, isa=None, input_shape=None)``:
    * ``threads``: cores used by ``run``: batches of >= 2 chunks run chunks of images in parallel; a single
      chunk runs on one thread unless it executes >= PAR_MIN_MACS MACs (its images x the plan's MACs per
      image; default 20 M), then each op's output channels are split. Results are identical for any thread
      count.
    * ``verify``: run ``verify_input`` (default: seeded standard-normal batch of 8) through the engine and
      ONNX Runtime and raise ``EngineVerifyError`` if ``max|diff| > VERIFY_ATOL + VERIFY_RTOL * max|ref|``;
      the outcome is in ``session.verification`` (max_abs_err, atol, batch, vacuous: ORT's outputs were
      all equal, so the check proves little).
    * ``cache``: reuse per-layer kernel decisions from ``$XDG_CACHE_HOME/sparsekit/engine/choices.json``
      (default on; ``SPARSEKIT_ENGINE_CACHE=0`` or ``cache=False`` disables; ``SPARSEKIT_ENGINE_CACHE_DIR``
      puts the file elsewhere).
    * ``isa``: "avx512" | "avx2" | "baseline" (default: best the CPU supports, or ``SPARSEKIT_ENGINE_ISA``).
      Unpinned, each sparse layer also times the narrower vector ISAs and keeps the fastest (the sparse
      format is ISA-independent; on AVX-512 CPUs the avx2 sparse kernels can win); a pinned ISA is used for
      every layer. Dense layers use the session's ISA.
    * ``input_shape``: per-sample shape for graphs whose input dims are symbolic.
    * ``kernels``: "auto" (time sparse and dense per layer), or force "sparse" / "dense" everywhere (tests,
      debugging). Dense convs come in two forms with the same results: "blocked" (output channels x vectors of
      positions, weights broadcast) and "oc" (output channels in the vector lanes, inputs broadcast; pays on
      short maps; for a depthwise conv on a small map, native conv_dw_cl: vector-width channels per vector,
      their input transposed once); "auto"/"dense" settle each conv's form by running the whole plan both
      ways, "dense-blocked" / "dense-oc" force one.

The engine computes with denormals flushed to zero (x86 FTZ/DAZ, aarch64 FPCR.FZ), as TensorFlow and
OpenVINO do for inference: a value below 1.18e-38 becomes 0, and an x86 FMA that meets a denormal no longer
takes a ~100-cycle microcode assist. The caller's floating-point mode is restored after every run.

Batches run in chunks of ``Session.chunk`` images (one arena per chunk): graphs with small activations and FC
layers use 16 (the FC kernels vectorize over the chunk's images), conv graphs with small-map stride-1 convs
up to 8 (their sparse kernel puts 2-8 images into one register tile, so each non-zero's offset and weight
are loaded once for all of them), others 1. Results do not depend on the chunking.

``Session.run(x)`` accepts any batch size; float64/float16 inputs are converted to float32, any other
dtype or a wrong shape raises ``EngineInputError``; non-contiguous arrays are copied.
``Session.plan()`` returns one dict per executed op: name, op, fused, kernel ("sparse"/"dense"/"direct"),
density, macs_dense / macs_sparse (per sample), us (measured µs per candidate kernel at load), cached, and for
conv/fc ops batched (dense small-map conv whose register tiles span the images of a chunk, chosen by timing),
isa (of the kernel that runs), and for dense convs dense_form ("blocked" / "oc"; us_in_plan: both forms' times
in the whole plan's run when it was settled there).
``Session.profile(batch=1, threads=None)`` runs the plan under the native per-op profiler and returns where
the time goes at that batch and thread count (median wall µs per op, the run's wall time, and the part
outside the ops); ``plan(profile=True, batch=...)`` adds those as ``measured_us`` / ``measured_share``.

Errors (one line each, all ``sparsekit.errors.SparsekitError``): ``EngineUnsupported`` (op not
implemented; names op and node), ``EngineLoadError`` (missing/corrupt file; an ``ArtifactError``),
``EngineInputError``, ``EngineVerifyError`` (a ``VerificationError``).

Distribution: ``sparsekit-engine`` (engine/ in the sparsekit repository: numpy + onnx + the native module,
no torch); ``sparsekit`` depends on it and re-exports it as ``sparsekit.engine``. Build:
``pip install -e engine`` compiles engine/native/ with CMake (scikit-build-core); after editing native
sources re-run it (``make venv`` does so automatically when engine/native/ or engine/CMakeLists.txt change).
Time a model without sparsekit: ``python -m sparsekit_engine bench model.onnx --batch 1``.
"""

from __future__ import annotations

from typing import Any

# errors import nothing heavy: sparsekit's error tree builds on them without loading numpy or the engine
from sparsekit_engine.errors import (
    EngineBuildError,
    EngineError,
    EngineInputError,
    EngineLoadError,
    EngineUnsupported,
    EngineVerifyError,
)

#: absolute tolerance of the load-time check against ONNX Runtime
VERIFY_ATOL = 1e-4
#: plus this fraction of the largest |reference output| (float32 summation order on large logits)
VERIFY_RTOL = 1e-5
#: default verification batch
VERIFY_BATCH = 8
ISAS = ("avx512", "avx2", "baseline")
#: one chunk of images (e.g. batch 1, or one chunk of lanes in the interleaved layout): split output channels
#: across threads only when the chunk executes at least this many MACs (images x MACs per image; env
#: SPARSEKIT_ENGINE_PAR_MIN_MACS; 10**15 = never). Channel splitting needs a
#: barrier per op. Measured at batch 1 with 2 threads on the 2-vCPU dev VM (benchmarks/engine_par_b1.py in
#: the sparsekit repository, 2026-12-03): idle, it ran 1.13-1.40x faster on plans of 41-148 M MACs
#: (resnet20 0 %, mobilenet_v2 0 %, efficientnet_b0, resnet18) and 1.21x on resnet20 at 99 % (1.3 M); with the
#: other core busy it ran 0.55-0.86x on the large plans but 0.20x on the 1.3 M one (each barrier waits for a
#: descheduled thread). 20 M keeps the small plans, where a busy core costs most, on one thread.
PAR_MIN_MACS = 20_000_000

__all__ = ["load", "Session", "available_isas", "VERIFY_ATOL", "VERIFY_RTOL", "EngineError", "EngineUnsupported",
           "EngineInputError", "EngineVerifyError", "EngineLoadError", "EngineBuildError"]

_LAZY = ("load", "Session", "available_isas", "_lib")


def __getattr__(name: str) -> Any:
    """The session API loads numpy and the native module on first use, not at ``import sparsekit_engine``."""
    if name in _LAZY:
        from sparsekit_engine import session

        return getattr(session, name)
    raise AttributeError(f"module 'sparsekit_engine' has no attribute {name!r}")
