"""Every format equals masked-dense within its named tolerance; structured removes only what is free."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparsekit.binary_mask import Mask
from sparsekit.formats import FORMATS, get_format, load_converted
from sparsekit.formats.base import check_equal
from sparsekit.models import ModelSpec, build_model
from sparsekit.ticket import Ticket
from tests.unit._deploy_runs import channel_mask, make_run

FORMAT_OPTIONS = {"nm": {"n": 2, "m": 4}, "block": {"block": (4, 4)}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {
        "lenet300": make_run(tmp_path_factory, "lenet300", sparsity=0.95),
        "resnet20": make_run(tmp_path_factory, "resnet20", "synthetic:3x16x16", 0.5, granularity="channel"),
    }


def _x(ticket: Ticket, n: int = 16) -> torch.Tensor:
    return torch.randn(n, *ticket.spec.in_shape, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("fmt", FORMATS.names())
@pytest.mark.parametrize("model", ["lenet300", "resnet20"])
def test_format_equals_masked_dense(runs, fmt, model):
    ticket = Ticket.load(runs[model])
    net, mask, x = ticket.materialize("final"), ticket.mask(), _x(ticket)
    form = get_format(fmt, **FORMAT_OPTIONS.get(fmt, {}))
    converted = form.convert(net, mask, x)
    # independent re-check of the contract with the format's own named tolerance
    diff = check_equal(converted, net, _x(ticket, 5), form.atol, fmt)
    assert diff <= form.atol * 100
    if fmt in ("structured", "csr"):
        assert converted.reference_mask == mask  # these formats do not change the function at all
    else:  # pattern formats: the projection only drops weights; a revived mask slot holds exactly 0
        params = dict(converted.module.named_parameters())
        orig = dict(net.named_parameters())
        for n in converted.reference_mask.names:
            assert not bool(((params[n] != 0) & (orig[n] == 0)).any()), n


def test_structured_removes_channels_and_macs(runs):
    ticket = Ticket.load(runs["resnet20"])
    c = get_format("structured").convert(ticket.materialize("final"), ticket.mask(), _x(ticket))
    assert c.report["channels_removed"] > 0
    assert c.report["macs_after"] < c.report["macs_before"]
    assert c.report["params_after"] < c.report["params_before"]


def test_structured_residual_channel_needs_every_coupled_layer(synthetic):
    """Stage-1 stream of resnet20 = stem conv1 + blocks.0-2.conv2 (identity shortcuts)."""
    net = build_model(ModelSpec("resnet20", (3, 16, 16), 10), seed=0).eval()
    keep = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters()
            if n.endswith("weight") and p.dim() > 1}
    for n in ("conv1.weight", "blocks.0.conv2.weight", "blocks.1.conv2.weight", "blocks.2.conv2.weight"):
        keep[n][3] = False  # channel 3 masked in EVERY coupled layer -> removable
    keep["blocks.0.conv2.weight"][5] = False  # channel 5 masked in one of them only -> kept
    from sparsekit.binary_mask import Mask

    mask = Mask(keep)
    x = torch.randn(8, 3, 16, 16)
    c = get_format("structured").convert(net, mask, x)
    assert c.module.conv1.out_channels == 15
    assert c.module.blocks[0].conv2.out_channels == 15
    assert c.module.blocks[1].conv1.in_channels == 15


def test_structured_keeps_channels_with_nonzero_output():
    """A masked neuron with a bias emits relu(bias) != 0: removing it would change the function."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        net[1].bias.fill_(0.5)
    from sparsekit.binary_mask import Mask

    keep = {"1.weight": torch.ones(8, 16, dtype=torch.bool), "3.weight": torch.ones(3, 8, dtype=torch.bool)}
    keep["1.weight"][:4] = False
    c = get_format("structured").convert(net, Mask(keep), torch.randn(8, 1, 4, 4))
    assert c.module[1].out_features == 8  # nothing removed: their output is relu(0.5), not zero
    with torch.no_grad():
        net[1].bias[:2] = -1.0  # relu(-1) = 0: these two are now truly dead
    c = get_format("structured").convert(net, Mask(keep), torch.randn(8, 1, 4, 4))
    assert c.module[1].out_features == 6


@pytest.mark.parametrize("name", ["tv:resnet18", "tv:mobilenet_v3_small"])
def test_structured_torchvision(name):
    net = build_model(ModelSpec(name, (3, 32, 32), 10), seed=0).eval()
    mask = channel_mask(net, 0.5)
    mask.apply(net)
    x = torch.randn(4, 3, 32, 32)
    c = get_format("structured").convert(net, mask, x)
    assert c.report["channels_removed"] > 0 and c.report["macs_after"] < c.report["macs_before"]
    ref = copy.deepcopy(net)
    with torch.no_grad():
        assert torch.allclose(c.module(x), ref(x), atol=get_format("structured").atol * max(1.0, float(ref(x).abs().max())))


@pytest.mark.parametrize("fmt", FORMATS.names())
def test_convert_saves_and_reloads_without_pickle(runs, fmt):
    from sparsekit.formats import convert_run

    run = runs["resnet20"]
    res = convert_run(run, fmt, **FORMAT_OPTIONS.get(fmt, {}))
    ticket = Ticket.load(run)
    x = _x(ticket, 4)
    model = load_converted(run, fmt, example=x)
    if fmt in ("structured", "csr"):  # these equal the masked-dense ticket itself
        ref = ticket.materialize("final")
    else:  # pattern formats equal their projection (cheap to redo)
        ref = get_format(fmt, **FORMAT_OPTIONS.get(fmt, {})).convert(ticket.materialize("final"), ticket.mask(), x).module
    with torch.no_grad():
        assert torch.allclose(model(x), ref.eval()(x), atol=1e-4)
    assert res["path"].endswith(fmt)


def test_csr_uses_int32_indices_and_reports_storage(runs):
    from sparsekit.formats.csr import CsrLinear

    ticket = Ticket.load(runs["lenet300"])
    c = get_format("csr").convert(ticket.materialize("final"), ticket.mask(), _x(ticket))
    layers = [m for m in c.module.modules() if isinstance(m, CsrLinear)]
    assert layers and all(m.weight_csr.col_indices().dtype == torch.int32 for m in layers)
    assert c.report["storage_bytes"] < c.report["dense_bytes"]


def test_nm_pattern_valid_and_counts_changes(runs):
    ticket = Ticket.load(runs["lenet300"])
    c = get_format("nm", n=1, m=4).convert(ticket.materialize("final"), ticket.mask(), _x(ticket))
    w = c.module[1].weight.detach()
    assert int(((w != 0).reshape(-1, 4).sum(1) > 1).sum()) == 0
    assert c.report["weights_changed"] > 0


def _random_linear(density: float, shape=(300, 784), seed=0):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(shape[1], shape[0]))
    keep = torch.rand(shape, generator=g) < density
    with torch.no_grad():
        net[1].weight.mul_(keep)
    return net, Mask({"1.weight": keep}), torch.randn(4, 1, 28, 28, generator=g)


def test_block_projection_preserves_density_and_keeps_the_heaviest_blocks():
    net, mask, x = _random_linear(0.1)
    c = get_format("block", block=(4, 4)).convert(net, mask, x)
    r = c.report
    assert abs(r["density_after"] - r["density_before"]) <= 16 / (300 * 784)  # within one block
    assert r["pattern_valid"] and r["layers"][0]["pattern_valid"] and r["skipped_layers"] == []
    keep = c.mask["1.weight"]
    w = net[1].weight.detach()
    blocks = keep.reshape(75, 4, 196, 4).permute(0, 2, 1, 3).reshape(75, 196, 16)
    assert bool((blocks.all(-1) | ~blocks.any(-1)).all())  # whole blocks only
    l1 = (w.abs() * mask["1.weight"]).reshape(75, 4, 196, 4).permute(0, 2, 1, 3).reshape(75, 196, 16).sum(-1)
    kept_blocks = blocks.all(-1)
    assert float(l1[kept_blocks].min()) >= float(l1[~kept_blocks].max())  # the largest surviving magnitude
    assert r["nonzero_density_after"] <= r["density_after"] and 0 < r["survivors_kept"] < 1


def test_nm_projection_density_is_min_of_ticket_and_n_over_m():
    sparse_net, sparse_mask, x = _random_linear(0.1)
    r = get_format("nm", n=2, m=4).convert(sparse_net, sparse_mask, x).report
    assert r["density_after"] == pytest.approx(r["density_before"], abs=1e-12)  # sparser than 2:4: kept
    assert r["survivors_kept"] > 0.97 and r["pattern_valid"]
    dense_net, dense_mask, _ = _random_linear(0.8)
    assert get_format("nm", n=2, m=4).convert(dense_net, dense_mask, x).report["density_after"] == 0.5  # capped


def test_nm_projection_is_exactly_n_over_m_and_keeps_the_largest():
    net, mask, x = _random_linear(0.5)
    c = get_format("nm", n=2, m=4).convert(net, mask, x)
    r = c.report
    assert r["density_after"] == pytest.approx(min(0.5, r["density_before"]), abs=1e-12) and r["pattern_valid"]
    assert r["density_after"] > 0.49  # not the 40 % of dropping survivors without refilling
    w = net[1].weight.detach()
    groups_w = (w * mask["1.weight"]).abs().reshape(-1, 4)
    kept = c.mask["1.weight"].reshape(-1, 4)
    alive = groups_w > 0
    # no surviving weight is dropped while a smaller (or masked) one of its group is kept
    dropped = torch.where(alive & ~kept, groups_w, torch.full_like(groups_w, -1)).max(1).values
    held = torch.where(kept, torch.where(alive, groups_w, torch.zeros_like(groups_w)), torch.full_like(groups_w, 1e9))
    assert bool((dropped <= held.min(1).values).all())
    assert r["nonzero_density_after"] < 0.5 and r["weights_changed"] == int((alive & ~kept).sum())


def test_nm_reports_skipped_layers_and_never_claims_them_valid(runs):
    ticket = Ticket.load(runs["lenet300"])
    c = get_format("nm", n=1, m=3).convert(ticket.materialize("final"), ticket.mask(), _x(ticket))
    r = c.report
    widths = {row["name"]: row for row in r["layers"]}
    skipped = {s["name"]: s["reason"] for s in r["skipped_layers"]}
    assert skipped and all("not a multiple of M=3" in why for why in skipped.values())
    for name in skipped:
        assert widths[name]["eligible"] is False and "pattern_valid" not in widths[name]
        assert bool((c.mask[name] == ticket.mask()[name]).all())  # left as it was
    assert set(r["patterned_layers"]) == set(widths) - set(skipped)


def test_convert_cli_reports_accuracy_and_finetunes_the_projection(runs, tmp_path):
    import json
    import shutil

    from typer.testing import CliRunner

    from sparsekit.cli.main import app

    run = tmp_path / "run"
    shutil.copytree(runs["lenet300"], run)
    r = CliRunner().invoke(app, ["convert", str(run), "--format", "block", "--block", "4x4",
                                 "--finetune-epochs", "1", "--json", str(tmp_path / "c.json")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "c.json").read_text())["report"]
    for key in ("accuracy_before", "accuracy_after", "accuracy_after_finetune"):
        assert 0 <= rep[key] <= 1
    assert "accuracy: ticket" in r.stdout and "valid on 3 of 3 layers" in r.stdout
    assert rep["nonzero_density_after_finetune"] <= rep["density_after"] + 1e-9
    bad = CliRunner().invoke(app, ["convert", str(run), "--format", "csr", "--finetune-epochs", "1"])
    assert bad.exit_code == 2 and "--finetune-epochs" in bad.stderr


def test_convert_cli_errors(runs):
    from typer.testing import CliRunner

    from sparsekit.cli.main import app

    r = CliRunner().invoke(app, ["convert", str(runs["lenet300"]), "--format", "structurd"])
    assert r.exit_code == 2 and "did you mean 'structured'" in r.stderr
    r = CliRunner().invoke(app, ["convert", str(runs["lenet300"]), "--format", "block", "--block", "4by4"])
    assert r.exit_code == 2 and "--block" in r.stderr
    r = CliRunner().invoke(app, ["convert", "/nonexistent/run", "--format", "csr"])
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1


def test_channel_granularity_gives_whole_channel_masks(runs):
    """Issue 5 item C: --granularity channel masks whole output channels (rows all kept or all masked)."""
    mask = Ticket.load(runs["resnet20"]).mask()
    some_dead = False
    for name, keep in mask.items():
        rows = keep.reshape(keep.shape[0], -1)
        assert bool((rows.all(1) | ~rows.any(1)).all()), name
        some_dead |= bool((~rows.any(1)).any())
    assert some_dead


def test_structured_repairs_stale_bn_statistics_of_dead_channels():
    """A fully masked conv channel feeds BN an all-zero input: its true running mean is 0."""
    from sparsekit.binary_mask import Mask

    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    with torch.no_grad():
        net[1].running_mean.fill_(-0.5)  # stale: relu(0 - (-0.5) * ...) > 0 without the repair
    keep = {"0.weight": torch.ones(8, 3, 3, 3, dtype=torch.bool), "3.weight": torch.ones(4, 8, 3, 3, dtype=torch.bool)}
    keep["0.weight"][:3] = False
    c = get_format("structured").convert(net, Mask(keep), torch.randn(4, 3, 6, 6))
    assert c.report["bn_channels_repaired"] == 3 and c.report["bn_repair_max_abs_change"] > 0
    assert c.module[0].out_channels == 5 and c.module[3].in_channels == 5
    off = get_format("structured", repair_bn=False).convert(net, Mask(keep), torch.randn(4, 3, 6, 6))
    assert off.module[0].out_channels == 8  # without the repair the constants are real and kept


def test_coupled_channel_groups_name_the_residual_stream():
    from sparsekit.formats.structured import coupled_channel_groups

    net = build_model(ModelSpec("resnet20", (3, 16, 16), 10), seed=0)
    groups = coupled_channel_groups(net, torch.randn(2, 3, 16, 16))
    stream = next(g for g in groups if any(m["weight"] == "conv1.weight" for m in g["members"]))
    assert {m["weight"] for m in stream["members"]} == {
        "conv1.weight", "blocks.0.conv2.weight", "blocks.1.conv2.weight", "blocks.2.conv2.weight"}
    assert all(m["rows"] == list(range(16)) for m in stream["members"])
    inner = next(g for g in groups if g["root"] == "blocks.4.conv1")
    assert [m["weight"] for m in inner["members"]] == ["blocks.4.conv1.weight"]
    assert not any(m["weight"] == "fc.weight" for g in groups for m in g["members"])


def test_structured_round_to_keeps_widths_multiple(runs):
    ticket = Ticket.load(runs["resnet20"])
    c = get_format("structured", round_to=4).convert(ticket.materialize("final"), ticket.mask(), _x(ticket))
    widths = [r["out_after"] for r in c.report["layers"] if r["out_after"] != r["out_before"]]
    assert widths and all(w % 4 == 0 for w in widths)
