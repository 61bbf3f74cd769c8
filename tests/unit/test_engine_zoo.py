"""sparse-cpu end-to-end: every zoo model (+ the deployable torchvision nets at small inputs) with a 90 % magnitude
mask, exported by torch.onnx.export like `sparsekit export` does, must match ONNX Runtime (load-time
verification) and torch; also the dynamo exporter and sparse initializers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

engine = pytest.importorskip("sparsekit.engine")
torch = pytest.importorskip("torch")

from sparsekit.export.onnx_export import ONNX_IR_VERSION, to_onnx_proto  # noqa: E402
from sparsekit.models import ModelSpec, build_model  # noqa: E402

ZOO = [
    ("lenet300", (1, 28, 28)),
    ("lenet5", (1, 28, 28)),
    ("conv2", (3, 32, 32)),
    ("conv4", (3, 32, 32)),
    ("conv6", (3, 32, 32)),
    ("resnet20", (3, 32, 32)),
    ("vgg16", (3, 32, 32)),
    ("tv:resnet18", (3, 64, 64)),
    ("tv:mobilenet_v3_small", (3, 64, 64)),
]
#: the torchvision architectures people deploy to CPUs (issue 17 item 5), small inputs so the tests stay fast
TV_DEPLOY = [
    ("tv:efficientnet_b0", (3, 32, 32)),
    ("tv:regnet_y_400mf", (3, 32, 32)),
    ("tv:mobilenet_v3_large", (3, 32, 32)),
    ("tv:squeezenet1_1", (3, 48, 48)),
    ("tv:densenet121", (3, 32, 32)),
]


@pytest.fixture(autouse=True)
def _channel_parallel_always(monkeypatch):
    """Batch-1 runs with threads=2 split channels even for tiny plans, so that path is tested."""
    monkeypatch.setenv("SPARSEKIT_ENGINE_PAR_MIN_MACS", "0")


def masked_model(name: str, shape: tuple, sparsity: float = 0.9, seed: int = 0,
                 layerwise: bool | None = None, calibrate: bool = False) -> torch.nn.Module:
    """Magnitude mask: global (zoo models) or per layer (torchvision: their tiny-init classifier would be
    pruned away by a global threshold, leaving a constant output). ``calibrate``: BN statistics measured on a
    random batch of the masked model (deep random-init nets otherwise lose the signal, and their logits
    collapse to the classifier bias); else random BN statistics."""
    m = build_model(ModelSpec(name, shape, 10), seed=seed).eval()
    layerwise = name.startswith("tv:") if layerwise is None else layerwise
    ws = [p for p in m.parameters() if p.dim() > 1]
    groups = [[p] for p in ws] if layerwise else [ws]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for grp in groups:
            mags = torch.cat([p.detach().abs().flatten() for p in grp])
            thr = mags.kthvalue(max(1, int(sparsity * mags.numel()))).values
            for p in grp:
                p.mul_((p.abs() > thr).float())
        bns = [mod for mod in m.modules() if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d))]
        for mod in bns:  # non-trivial BN statistics so folding is exercised
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            if calibrate:
                mod.reset_running_stats()
                mod.momentum = None  # cumulative average over the calibration batch
        if calibrate:
            m.train()
            m(torch.randn(16, *shape, generator=g))
            m.eval()
    return m


def export(m: torch.nn.Module, shape: tuple, path, dynamo: bool = False) -> str:
    if dynamo:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            prog = torch.onnx.export(m, (torch.zeros(2, *shape),), dynamo=True, opset_version=18,
                                     input_names=["input"], output_names=["logits"],
                                     dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False)
        proto = prog.model_proto
    else:
        proto, _ = to_onnx_proto(m, shape)
    proto.ir_version = ONNX_IR_VERSION
    onnx.save(proto, str(path))
    return str(path)


@pytest.mark.parametrize("name,shape", ZOO + [pytest.param(*t, marks=pytest.mark.slow) for t in TV_DEPLOY],
                         ids=[z[0] for z in ZOO + TV_DEPLOY])
def test_zoo_parity(tmp_path, name, shape):
    m = masked_model(name, shape, calibrate=name in dict(TV_DEPLOY))
    path = export(m, shape, tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((3, *shape)).astype(np.float32)
    # the torchvision nets skip the per-layer sparse/dense timing (~100 layers x 2 kernels) to stay fast
    kernels = "sparse" if name in dict(TV_DEPLOY) else "auto"
    s = engine.load(path, threads=1, cache=False, kernels=kernels)  # raises EngineVerifyError on mismatch vs ORT
    v = s.verification
    assert v["reference"] == "onnxruntime" and not v["vacuous"] and v["max_abs_err"] <= v["tolerance"]
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    y = s.run(x)
    scale = float(np.abs(ref).max())
    assert scale > 0 and np.ptp(ref) > 0
    assert np.max(np.abs(y - ref)) <= 1e-4 * max(1.0, scale) and np.max(np.abs(y - ref)) <= 1e-3 * scale
    s2 = engine.load(path, threads=2, cache=False, verify=False, kernels="sparse")
    s1 = engine.load(path, threads=1, cache=False, verify=False, kernels="sparse")
    np.testing.assert_array_equal(s1.run(x), s2.run(x))
    np.testing.assert_array_equal(s1.run(x[:1]), s2.run(x[:1]))
    kinds = {p["kind"] for p in s.plan()}
    for torch_type, kind in ((torch.nn.Conv2d, "conv"), (torch.nn.Linear, "fc")):
        if any(isinstance(mod, torch_type) for mod in m.modules()):
            assert kind in kinds


def test_resnet20_dynamo_and_sparse_initializers(tmp_path):
    from sparsekit.export.sparse_init import to_sparse_initializers

    shape = (3, 32, 32)
    m = masked_model("resnet20", shape, sparsity=0.95)
    path = export(m, shape, tmp_path / "dyn.onnx", dynamo=True)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    s = engine.load(path, cache=False)
    x = np.random.default_rng(2).standard_normal((2, *shape)).astype(np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(s.run(x) - ref)) < 1e-4 * max(1.0, float(np.abs(ref).max())), ops
    proto = onnx.load(path)
    to_sparse_initializers(proto)
    assert len(proto.graph.sparse_initializer) > 5
    onnx.save(proto, str(tmp_path / "sp.onnx"))
    s2 = engine.load(tmp_path / "sp.onnx", cache=False, verify=False)
    np.testing.assert_allclose(s2.run(x), s.run(x), rtol=1e-5, atol=1e-5)
    dens = [p["density"] for p in s2.plan() if p["kind"] == "conv"]
    assert np.mean(dens) < 0.2
