"""ONNX export: verified parity on real inputs, zeros kept, metadata, IR version, atomic failure."""

from __future__ import annotations

import onnx
import pytest
import torch
from typer.testing import CliRunner

from sparsekit.cli.main import app
from sparsekit.export import (
    EXPORT_ATOL,
    ONNX_IR_VERSION,
    ONNX_OPSET,
    export_run,
    read_metadata,
    to_onnx_proto,
)
from sparsekit.export.verify import check_parity, check_zeros
from sparsekit.models import ModelSpec, build_model
from sparsekit.ticket import Ticket
from tests.unit._deploy_runs import make_run


@pytest.fixture(scope="module")
def l300(tmp_path_factory):
    return make_run(tmp_path_factory, "lenet300", sparsity=0.95)


@pytest.fixture(scope="module")
def r20(tmp_path_factory):
    return make_run(tmp_path_factory, "resnet20", "synthetic:3x16x16", 0.5, granularity="channel")


def test_export_ticket_verified_with_zeros_and_metadata(l300, tmp_path):
    out = tmp_path / "t.onnx"
    res = export_run(l300, out)
    proto = onnx.load(str(out))
    assert proto.ir_version == ONNX_IR_VERSION
    assert any(o.domain in ("", "ai.onnx") and o.version >= ONNX_OPSET for o in proto.opset_import)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert not list(tmp_path.glob("*.data")) and not list(tmp_path.glob(".*tmp"))  # single file, no leftovers
    mask = Ticket.load(l300).mask()
    z = res.verification["zeros"]
    assert z["masked_total"] == mask.numel - mask.kept
    assert all(r["zeros_in_onnx"] >= r["masked"] for r in z["layers"])
    assert {b["batch"] for b in res.verification["parity"]["batches"]} >= {1, 64}
    assert res.verification["parity"]["max_abs_diff"] <= EXPORT_ATOL
    meta = read_metadata(proto)
    assert meta["variant"] == "ticket" and meta["mask_sha256"] == mask.sha256()
    assert abs(float(meta["sparsity"]) - mask.sparsity) < 1e-9


def test_export_dense_reference(l300, tmp_path):
    res = export_run(l300, tmp_path / "d.onnx", dense=True)
    assert res.variant == "dense" and read_metadata(onnx.load(str(tmp_path / "d.onnx")))["variant"] == "dense"
    assert res.verification["zeros"]["masked_total"] == 0


def test_sparse_initializers_smaller_at_high_sparsity(l300, tmp_path):
    dense_file = export_run(l300, tmp_path / "m.onnx").file_bytes
    res = export_run(l300, tmp_path / "s.onnx", sparse_initializers=True)
    proto = onnx.load(str(tmp_path / "s.onnx"))
    assert len(proto.graph.sparse_initializer) >= 1
    assert all(sp.indices.data_type == onnx.TensorProto.INT64 for sp in proto.graph.sparse_initializer)
    assert res.file_bytes < 0.5 * dense_file
    assert any("densifies" in n for n in res.notes)


def test_structured_export_is_smaller_and_verified(r20, tmp_path):
    masked = export_run(r20, tmp_path / "m.onnx")
    res = export_run(r20, tmp_path / "s.onnx", fmt="structured")
    assert res.structured["macs_after"] < res.structured["macs_before"]
    assert res.file_bytes < masked.file_bytes
    assert res.verification["parity"]["max_abs_diff"] <= EXPORT_ATOL * 10


@pytest.mark.parametrize("name,shape", [
    ("lenet300", (1, 16, 16)), ("lenet5", (1, 28, 28)), ("conv4", (3, 32, 32)), ("resnet20", (3, 16, 16)),
    ("vgg16", (3, 32, 32)), ("tv:resnet18", (1, 32, 32)), ("tv:mobilenet_v3_small", (3, 32, 32)),
])
def test_every_model_exports_with_dynamic_batch(name, shape, tmp_path):
    net = build_model(ModelSpec(name, shape, 10), seed=0).eval()
    proto, exporter = to_onnx_proto(net, shape)
    proto.ir_version = ONNX_IR_VERSION
    path = tmp_path / "m.onnx"
    path.write_bytes(proto.SerializeToString())
    onnx.checker.check_model(str(path), full_check=True)
    g = torch.Generator().manual_seed(0)
    parity = check_parity(path, net, iter([torch.randn(1, *shape, generator=g), torch.randn(5, *shape, generator=g)]))
    assert parity["max_abs_diff"] <= EXPORT_ATOL * 10


def test_zero_check_detects_lost_zeros(l300, tmp_path):
    from onnx import numpy_helper

    from sparsekit.errors import VerificationError

    export_run(l300, tmp_path / "t.onnx")
    proto = onnx.load(str(tmp_path / "t.onnx"))
    mask = Ticket.load(l300).mask()
    for t in proto.graph.initializer:  # resurrect every masked weight
        a = numpy_helper.to_array(t)
        if a.ndim == 2:
            t.CopyFrom(numpy_helper.from_array(a + 1.0, t.name))
    with pytest.raises(VerificationError, match="lost the zeros"):
        check_zeros(proto, mask)


def test_cli_export(l300, tmp_path):
    r = CliRunner().invoke(app, ["export", str(l300), "--out", str(tmp_path / "c.onnx")])
    assert r.exit_code == 0, r.output
    assert "verified" in r.stdout and "masked-dense ONNX runs at dense speed" in r.stdout


def test_cli_export_errors(l300, tmp_path):
    run = CliRunner()
    r = run.invoke(app, ["export", str(tmp_path / "missing"), "--out", str(tmp_path / "x.onnx")])
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1 and "not found" in r.stderr
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "run.json").write_text("{not json")
    r = run.invoke(app, ["export", str(corrupt), "--out", str(tmp_path / "x.onnx")])
    assert r.exit_code == 1 and "corrupt" in r.stderr
    r = run.invoke(app, ["export", str(l300), "--out", str(tmp_path / "nodir" / "x.onnx")])
    assert r.exit_code == 2 and not (tmp_path / "nodir").exists()
    r = run.invoke(app, ["export", str(l300), "--out", str(tmp_path / "x.onnx"), "--format", "csr"])
    assert r.exit_code == 2 and "--format" in r.stderr
    assert not list(tmp_path.glob("*.onnx"))


def test_failed_verification_writes_nothing(l300, tmp_path, monkeypatch):
    from sparsekit.export import verify

    monkeypatch.setattr(verify, "EXPORT_ATOL", -1.0)  # nothing can pass
    r = CliRunner().invoke(app, ["export", str(l300), "--out", str(tmp_path / "x.onnx")])
    assert r.exit_code == 1 and "differs from torch" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_dynamo_fallback_when_torchscript_fails(monkeypatch, tmp_path):
    """If the TorchScript exporter fails, the dynamo exporter produces an equivalent dynamic-batch graph."""
    real_export = torch.onnx.export

    def flaky(*args, **kwargs):
        if kwargs.get("dynamo") is False:
            raise RuntimeError("tracing failed")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", flaky)
    net = build_model(ModelSpec("lenet300", (1, 8, 8), 10), seed=0).eval()
    proto, exporter = to_onnx_proto(net, (1, 8, 8))
    assert exporter == "dynamo"
    proto.ir_version = ONNX_IR_VERSION
    path = tmp_path / "m.onnx"
    path.write_bytes(proto.SerializeToString())
    parity = check_parity(path, net, iter([torch.randn(1, 1, 8, 8), torch.randn(3, 1, 8, 8)]))
    assert parity["max_abs_diff"] <= EXPORT_ATOL


def test_static_batch_export_has_fixed_batch_dimension(l300, tmp_path):
    import json

    out = tmp_path / "s.onnx"
    r = CliRunner().invoke(app, ["export", str(l300), "--out", str(out), "--static-batch", "4", "--json", "-"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 4 and not dims[0].dim_param
    assert [b["batch"] for b in res["verification"]["parity"]["batches"]] == [4, 4]
    assert res["metadata"]["sparsekit.batch"] == "4"
    bad = CliRunner().invoke(app, ["export", str(l300), "--out", str(out), "--static-batch", "0"])
    assert bad.exit_code == 2 and "--static-batch" in bad.stderr


def test_constant_outputs_are_verified_with_perturbed_weights(l300, tmp_path):
    import shutil

    from sparsekit._io import load_tensors, save_tensors

    run = tmp_path / "zero-head"
    shutil.copytree(l300, run)
    state = load_tensors(run / "final.safetensors")
    head = sorted(k for k in state if k.endswith(".weight"))[-1].rsplit(".", 1)[0]
    state[f"{head}.weight"].zero_()
    state[f"{head}.bias"].zero_()  # every logit is 0: torch == ORT trivially
    save_tensors(run / "final.safetensors", state)
    res = export_run(run, tmp_path / "z.onnx")
    assert res.verification["verified"] == "perturbed"
    assert res.verification["parity"]["perturbed"]["max_abs_diff"] <= EXPORT_ATOL
    assert any("perturbed weights" in n for n in res.notes)
    normal = export_run(l300, tmp_path / "n.onnx")
    assert normal.verification["verified"] == "passed" and "perturbed" not in normal.verification["parity"]


def test_vacuous_outputs_detected():
    import numpy as np

    from sparsekit.export.verify import is_vacuous

    assert is_vacuous([np.zeros((3, 10))])
    assert is_vacuous([np.ones((1, 10)), np.ones((7, 10))])  # same logits for every sample
    assert not is_vacuous([np.random.default_rng(0).normal(size=(8, 10))])


def test_exporter_chatter_stays_off_stdout(l300, tmp_path, capfd, monkeypatch):
    import json
    import os

    real = torch.onnx.export

    def chatty(*args, **kwargs):
        print("python-level XYZZY exporter\n" * 50)
        os.write(1, b"fd-level XYZZY on stdout\n" * 50)
        os.write(2, b"fd-level XYZZY on stderr\n" * 50)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", chatty)
    r = CliRunner().invoke(app, ["export", str(l300), "--out", str(tmp_path / "c.onnx"), "--json", "-"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["verification"]["verified"] == "passed"  # stdout is pure JSON
    assert "XYZZY" not in r.output
    fds = capfd.readouterr()
    assert "XYZZY" not in fds.out and "XYZZY" not in fds.err
