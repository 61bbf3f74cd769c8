"""Issue 19 item 5: the moved modules stay importable at their old paths (the very same module, so
private names and monkeypatching keep working), and method option errors name settings, not flags."""

from __future__ import annotations

import importlib

import pytest

from sparsekit.errors import SettingError, UsageError

MOVED = {
    "sparsekit.masking.channel_groups": "sparsekit.masking.coupling.channel_groups",
    "sparsekit.masking.channel_space": "sparsekit.masking.coupling.channel_space",
    "sparsekit.masking.concrete": "sparsekit.masking.relax.concrete",
    "sparsekit.masking.hard_concrete": "sparsekit.masking.relax.hard_concrete",
    "sparsekit.masking.gaussian_gate": "sparsekit.masking.relax.gaussian_gate",
    "sparsekit.masking.gradbalance": "sparsekit.masking.relax.gradbalance",
    "sparsekit.masking.topk": "sparsekit.masking.select.topk",
    "sparsekit.masking.collapse": "sparsekit.masking.select.collapse",
    "sparsekit.mask": "sparsekit.binary_mask",
    "sparsekit.report": "sparsekit.run_report",
    "sparsekit.bench.report": "sparsekit.bench.speedup_report",
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_path_is_the_moved_module(old):
    new = importlib.import_module(MOVED[old])
    assert importlib.import_module(old) is new
    assert new.__name__ == MOVED[old]


def test_old_from_imports_give_the_same_objects():
    from sparsekit.binary_mask import Mask
    from sparsekit.mask import Mask as OldMask
    from sparsekit.masking.select.topk import topk_mask
    from sparsekit.masking.topk import topk_mask as old_topk

    assert OldMask is Mask and old_topk is topk_mask


@pytest.mark.parametrize(("method", "opts", "setting"), [
    ("cts", {"objective": "nope"}, "objective"),
    ("cts", {"balance": "nope"}, "balance"),
    ("cts", {"lr": -1.0}, "method"),
    ("gates", {"relaxation": "nope"}, "relaxation"),
])
def test_method_option_errors_name_the_setting_and_the_cli_renders_the_flag(method, opts, setting):
    from sparsekit.methods import get_method

    with pytest.raises(SettingError) as info:
        get_method(method, opts)
    exc = info.value
    assert isinstance(exc, UsageError)
    assert setting in exc.settings
    assert not str(exc).startswith("--")  # the library names the setting
    assert str(exc).startswith(setting)
    assert exc.render(lambda name: "--" + name).startswith("--" + setting)
