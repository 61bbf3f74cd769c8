"""The shared learned-search loop (sparsekit.methods._search_loop): plan, schedules, loop, resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from sparsekit import paths
from sparsekit.data.synthetic import make_synthetic
from sparsekit.errors import UsageError
from sparsekit.methods import SearchContext
from sparsekit.methods._search_loop import (
    cosine,
    cts_shuffle_seed,
    plan_search,
    run_search,
    step_drop,
)

N_TRAIN, BATCH = 96, 16  # 6 batches per epoch


@pytest.fixture(scope="module")
def data():
    return make_synthetic(in_shape=(1, 4, 4), n_train=N_TRAIN, n_test=16)


def _ctx(data, tmp_path=None, **kw) -> SearchContext:
    return SearchContext(model=nn.Linear(16, 10), data=data, names=["weight"], sparsity=0.5, seed=3,
                         run_dir=tmp_path, progress=lambda msg: None, **kw)


def _plan(ctx, **kw):
    return plan_search(ctx, "test", BATCH, lambda per_epoch: 2, **kw)


class _Recorder:
    """A step function that remembers the batches it saw and the lr it ran with."""

    def __init__(self, opt: torch.optim.Optimizer | None = None, fail_at: int | None = None) -> None:
        self.opt, self.fail_at = opt, fail_at
        self.steps: list[int] = []
        self.first_labels: list[list[int]] = []
        self.lrs: list[float] = []

    def __call__(self, step: int, x: torch.Tensor, y: torch.Tensor) -> float:
        if step == self.fail_at:
            raise RuntimeError("boom")
        self.steps.append(step)
        self.first_labels.append(y[:4].tolist())
        if self.opt is not None:
            self.lrs.append(self.opt.param_groups[0]["lr"])
        return float(step) / 10


def _record(step: int, epoch: int, loss: float) -> dict:
    return {"step": step, "epoch": epoch + 1, "loss": loss}


def test_plan_lengths_cap_and_warning(data):
    plan = _plan(_ctx(data))
    assert (plan.per_epoch, plan.epochs, plan.total, plan.warning) == (6, 2, 12, None)
    plan = _plan(_ctx(data, search_steps=8), max_steps=5, settle=(10, "why"))
    assert (plan.epochs, plan.total) == (2, 5)  # 8 steps = 2 epochs of 6, capped at 5 steps
    assert plan.warning is not None and "5 steps" in plan.warning and "10" in plan.warning
    assert _plan(_ctx(data, search_steps=12), settle=(10, "why")).warning is None
    with pytest.raises(UsageError):
        _plan(_ctx(data, search_epochs=0))


def test_schedules():
    drop = step_drop(0.3, 4)
    assert [drop(s) for s in (0, 3, 4, 9)] == [0.3, 0.3, 0.3 * 0.1, 0.3 * 0.1]
    assert step_drop(0.3, None)(10**6) == 0.3
    for torch_rounding in (False, True):
        f = cosine(0.1, 10, torch_rounding)
        assert f(0) == 0.1 and f(5) == pytest.approx(0.05) and f(10) == pytest.approx(0.0, abs=1e-12)
        assert all(f(s) > f(s + 1) for s in range(10))
    # the torch spelling is what torch's LambdaLR gave edge-popup, bit for bit
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / 937)))
    f = cosine(0.1, 937, torch_rounding=True)
    for s in range(937):
        assert opt.param_groups[0]["lr"] == f(s)
        opt.step()
        sched.step()


def test_loop_runs_the_plan_sets_the_lr_and_logs(data, tmp_path):
    ctx = _ctx(data, tmp_path, search_steps=10)
    plan = _plan(ctx)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    fn, calls = _Recorder(opt), []
    res = run_search(ctx, plan, fn, opt=opt, lr_at=lambda s: 1.0 / (s + 1), log_path=paths.search_log(tmp_path),
                     record=lambda *a: calls.append(a) or _record(*a), progress_fields=lambda loss: {},
                     log_every=4)
    assert res.steps == 10 and fn.steps == list(range(10)) and res.last_loss == pytest.approx(0.9)
    assert fn.lrs == [1.0 / (s + 1) for s in range(10)]  # set before each step
    recs = [json.loads(ln) for ln in paths.search_log(tmp_path).read_text().splitlines()]
    assert [(r["step"], r["epoch"]) for r in recs] == [(4, 1), (8, 2), (10, 2)]  # every 4 and the last
    # the data order of each epoch comes from the plan's seed: a different seed, a different order
    other = _Recorder()
    run_search(ctx, _plan(ctx, data_seed=cts_shuffle_seed(ctx.seed)), other, opt=None, lr_at=None,
               log_path=None, record=_record, progress_fields=lambda loss: {})
    assert other.first_labels != fn.first_labels


def test_record_only_with_a_log_unless_asked(data):
    ctx = _ctx(data, search_steps=4)
    for always, expected in ((False, 0), (True, 4)):
        calls = []
        run_search(ctx, _plan(ctx), _Recorder(), opt=None, lr_at=None, log_path=None,
                   record=lambda *a, c=calls: c.append(a) or _record(*a), progress_fields=lambda loss: {},
                   record_always=always)
        assert len(calls) == expected


def test_resume_skips_done_steps_and_sees_the_same_batches(data, tmp_path):
    ctx = _ctx(data, tmp_path, search_steps=11)
    full = _Recorder()
    run_search(ctx, _plan(ctx), full, opt=None, lr_at=None, log_path=None, record=_record,
               progress_fields=lambda loss: {})
    resumed = _Recorder()
    res = run_search(ctx, _plan(ctx), resumed, opt=None, lr_at=None, log_path=None, record=_record,
                     progress_fields=lambda loss: {}, resume_at=7)
    assert res.steps == 11 and resumed.steps == list(range(7, 11))
    assert resumed.first_labels == full.first_labels[7:]


def test_checkpoints_flush_the_log_first_and_skip_the_last_step(data, tmp_path):
    ctx = _ctx(data, tmp_path, search_steps=9)
    log = paths.search_log(tmp_path)
    seen = {}

    def checkpoint(step: int) -> None:
        seen[step] = len(log.read_text().splitlines())

    run_search(ctx, _plan(ctx), _Recorder(), opt=None, lr_at=None, log_path=log, record=_record,
               progress_fields=lambda loss: {}, checkpoint=checkpoint, checkpoint_every=3)
    assert seen == {3: 3, 6: 6}  # not at step 9, the last


def test_a_failing_step_still_flushes_the_log(data, tmp_path):
    ctx = _ctx(data, tmp_path, search_steps=9)
    with pytest.raises(RuntimeError, match="boom"):
        run_search(ctx, _plan(ctx), _Recorder(fail_at=5), opt=None, lr_at=None,
                   log_path=paths.search_log(tmp_path), record=_record, progress_fields=lambda loss: {})
    assert [json.loads(ln)["step"] for ln in paths.search_log(tmp_path).read_text().splitlines()] == [1, 2, 3, 4, 5]

