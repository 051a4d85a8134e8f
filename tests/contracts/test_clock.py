"""The Clock port: timezone-aware times that never go back, and sleeps that return at once when
there is nothing to wait for. The system clock and the tests' manual one."""

from __future__ import annotations

import pytest

from mxgate.clock import SystemClock
from tests.fakes import ManualClock


@pytest.fixture(params=["system", "manual"])
def clock(request: pytest.FixtureRequest) -> object:
    return SystemClock() if request.param == "system" else ManualClock()


def test_now_is_timezone_aware_and_never_goes_back(clock):
    first = clock.now()
    assert first.utcoffset() is not None
    assert clock.now() >= first


def test_sleeping_no_time_or_less_returns_at_once(clock):
    before = clock.now()
    clock.sleep(0)
    clock.sleep(-1)
    assert clock.now() >= before
