"""Default search lengths and defaults of the strong-ticket methods (issue 21)."""

from __future__ import annotations

from sparsekit.methods.cts import REFERENCE_MIN_STEPS, default_search_epochs, settle_steps


def test_cts_default_length_is_the_training_budget_when_that_is_long_enough():
    # 160 epochs of 98 steps (the reference's CIFAR-10 setting) -> r = 1: all 160
    assert default_search_epochs(160, 98, 0.01) == 160


def test_cts_default_length_never_below_the_reference_shortest_search():
    # lenet300 / Fashion-MNIST at batch 512: 118 steps an epoch, training budget 1 + 3 epochs
    epochs = default_search_epochs(4, 118, 0.01)
    assert epochs * 118 >= REFERENCE_MIN_STEPS
    assert (epochs - 1) * 118 < REFERENCE_MIN_STEPS  # rounded up to whole epochs, not more
    # a 5,000-image subset at batch 512: 10 steps an epoch
    assert default_search_epochs(4, 10, 0.01) * 10 == REFERENCE_MIN_STEPS


def test_cts_default_length_never_below_gradbalance_settle_length():
    # a slower EMA needs longer than the reference's 2,000 steps to settle
    ema = 0.001
    assert settle_steps(ema) > REFERENCE_MIN_STEPS
    assert default_search_epochs(4, 100, ema) * 100 >= settle_steps(ema)
