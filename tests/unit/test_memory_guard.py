"""memory_limited: a step that grows past its limit is stopped with one UsageError naming it; a step
under the limit runs untouched; a real Ctrl-C stays a KeyboardInterrupt."""

import pytest

from sparsekit.errors import UsageError
from sparsekit.memory_guard import memory_limited


def test_a_step_past_its_limit_is_stopped_with_one_clear_error():
    hog = []
    with pytest.raises(UsageError, match=r"^tracing X needs more than 0\.0 GB of memory and was stopped; use Y$"):
        with memory_limited("tracing X", "use Y", limit_bytes=32 * 2**20):
            for _ in range(4096):  # up to 4 GB in 1 MB steps, touched so they count in RSS
                hog.append(bytearray(2**20))
                hog[-1][::4096] = b"\x01" * 256
    assert len(hog) < 4096  # stopped well before the loop ended
    hog.clear()


def test_a_step_under_its_limit_returns_its_result():
    with memory_limited("small", limit_bytes=2**30):
        total = sum(range(10**6))
    assert total == 499999500000


def test_a_real_interrupt_is_not_turned_into_a_usage_error():
    with pytest.raises(KeyboardInterrupt):
        with memory_limited("small", limit_bytes=2**30):
            raise KeyboardInterrupt
