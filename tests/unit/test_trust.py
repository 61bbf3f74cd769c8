"""User model code named by a run directory is imported only when trusted, and only unchanged."""

from __future__ import annotations

import hashlib
import json

import pytest
from typer.testing import CliRunner

from sparsekit.cli.main import app

runner = CliRunner()

GOOD = (
    "import torch.nn as nn\n"
    "def make(num_classes, in_shape):\n"
    "    c, h, w = in_shape\n"
    "    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 16), nn.ReLU(), nn.Linear(16, num_classes))\n"
)


def _evil(marker) -> str:
    # importing this file (not even calling it) leaves a marker behind
    return f"open({str(marker)!r}, 'w').write('imported')\n" + GOOD


def one_line(result, codes=(1, 2)):
    assert result.exit_code in codes, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in result.output, err
    return err


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    f = root / "mymodel.py"
    f.write_text(GOOD)
    out = root / "run"
    r = runner.invoke(app, ["prune", "--model", f"{f}:make", "--data", "synthetic:1x8x8", "--method", "magnitude",
                            "--sparsity", "0.5", "--pretrain-epochs", "0", "--finetune-epochs", "0", "--no-dense",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    return root, f, out


def test_run_json_records_factory_and_sha(user_run):
    _, f, out = user_run
    rec = json.loads((out / "run.json").read_text())["model"]["factory"]
    assert rec["spec"] == f"{f}:make"
    assert rec["path"] == str(f.resolve())
    assert rec["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()


def test_export_needs_trust_flag_or_env(user_run, tmp_path, monkeypatch):
    _, _, out = user_run
    monkeypatch.delenv("SPARSEKIT_TRUST_MODEL_CODE", raising=False)
    err = one_line(runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "m.onnx")]), (2,))
    assert "--trust-model-code" in err and "make" in err
    assert not (tmp_path / "m.onnx").exists()
    # the flag is global: accepted after the command too
    ok = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "m.onnx"), "--trust-model-code"])
    assert ok.exit_code == 0, ok.output
    import os

    assert "SPARSEKIT_TRUST_MODEL_CODE" not in os.environ  # not leaked past the invocation
    monkeypatch.setenv("SPARSEKIT_TRUST_MODEL_CODE", "1")
    assert runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "m2.onnx")]).exit_code == 0


@pytest.mark.parametrize("trusted", [False, True])
def test_edited_run_json_naming_another_file_is_not_imported(user_run, tmp_path, trusted):
    import shutil

    _, _, src = user_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.py"
    evil.write_text(_evil(marker))
    meta = json.loads((run / "run.json").read_text())
    meta["model"]["name"] = f"{evil}:make"
    meta["model"]["factory"]["spec"] = f"{evil}:make"
    meta["model"]["factory"]["path"] = str(evil)  # the sha256 still names the original file
    (run / "run.json").write_text(json.dumps(meta))
    args = ["export", str(run), "--out", str(tmp_path / "m.onnx")] + (["--trust-model-code"] if trusted else [])
    err = one_line(runner.invoke(app, args))
    assert ("changed since" in err) if trusted else ("--trust-model-code" in err)
    assert not marker.exists()
    assert not (tmp_path / "m.onnx").exists()


def test_changed_factory_file_is_refused_even_when_trusted(user_run, tmp_path):
    import shutil

    root, f, src = user_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    meta = json.loads((run / "run.json").read_text())
    moved = tmp_path / "mymodel.py"
    marker = tmp_path / "MARKER"
    moved.write_text(_evil(marker))  # same factory, file modified after the run was written
    meta["model"]["factory"]["path"] = str(moved)
    meta["model"]["name"] = meta["model"]["factory"]["spec"] = f"{moved}:make"
    (run / "run.json").write_text(json.dumps(meta))
    for cmd in (["export", str(run), "--out", str(tmp_path / "m.onnx")], ["convert", str(run), "--format", "csr"],
                ["finetune", str(run), "--epochs", "0"]):
        err = one_line(runner.invoke(app, ["--trust-model-code", *cmd]), (1,))
        assert "changed since the run was written" in err, err
    assert not marker.exists()


def test_info_reads_a_user_run_without_trust(user_run):
    _, _, out = user_run
    assert runner.invoke(app, ["info", str(out)]).exit_code == 0  # tensors and JSON only, no code


def test_registered_models_need_no_trust(tiny_run, tmp_path, monkeypatch):
    monkeypatch.delenv("SPARSEKIT_TRUST_MODEL_CODE", raising=False)
    r = runner.invoke(app, ["export", str(tiny_run), "--out", str(tmp_path / "t.onnx")])
    assert r.exit_code == 0, r.output


def test_module_factory_is_located_and_hashed_without_importing(tmp_path, monkeypatch):
    from sparsekit.models.registry import factory_record

    pkg = tmp_path / "skt_userpkg"
    pkg.mkdir()
    marker = tmp_path / "MARKER"
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    (pkg / "nets.py").write_text(GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    rec = factory_record("skt_userpkg.nets:make")
    assert rec["path"] == str((pkg / "nets.py").resolve())
    assert rec["sha256"] == hashlib.sha256((pkg / "nets.py").read_bytes()).hexdigest()
    assert not marker.exists()  # neither the package nor the module ran
