"""sparse-cpu computes with denormals flushed to zero (x86 MXCSR FTZ/DAZ, aarch64 FPCR.FZ) and gives the
caller's floating-point mode back after every run: a denormal in an FMA costs a microcode assist on x86
(efficientnet_b0's squeeze-excitation gates near 0 made its stage-6 convs ~4x slower)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.unit.test_engine_graphs import model

engine = pytest.importorskip("sparsekit.engine")


def scaled_conv(path, w: float) -> str:
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv0", kernel_shape=[1, 1])]
    inits = {"w": np.full((1, 1, 1, 1), w, np.float32), "b": np.zeros(1, np.float32)}
    return model(nodes, inits, (1, 8, 8), path)


@pytest.mark.parametrize("kernels", ["dense", "sparse"])
def test_denormal_results_flush_to_zero_and_the_callers_mode_is_restored(tmp_path, kernels):
    path = scaled_conv(tmp_path / "m.onnx", 1e-20)
    x = np.full((2, 1, 8, 8), 1e-20, np.float32)
    x[:, :, 0, 0] = 1.0  # a normal result next to the denormal ones
    tiny = np.float32(1e-20) * np.float32(1e-20)
    assert tiny != 0  # numpy's thread keeps gradual underflow before ...
    for isa in engine.available_isas():
        s = engine.load(path, isa=isa, cache=False, verify=False, kernels=kernels)
        y = s.run(x).reshape(2, 8, 8)
        assert np.all(y[:, 0, 0] == np.float32(1e-20)), isa
        rest = y.reshape(2, -1)[:, 1:]
        assert np.all(rest == 0.0), f"{isa}: {rest[rest != 0][:3]}"  # 1e-40 (a denormal) became 0
    # ... and after the engine's runs
    assert np.float32(1e-20) * np.float32(1e-20) == tiny != 0
    assert np.float32(1e-40) / np.float32(2) != 0
