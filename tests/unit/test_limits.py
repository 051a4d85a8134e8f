"""The ingress's limits: sessions in all and per client, and failed AUTH per client IP."""

from __future__ import annotations

import logging
import resource

import pytest

from mxgate.local.limits import (
    AUTH_LOCKED,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_FROM_CLIENT,
    AuthGuard,
    ConnectionGate,
    SmtpLimits,
    raise_open_file_limit,
)
from tests.fakes import ManualClock


def test_sessions_over_the_limits_are_refused_with_421_and_freed_when_they_end():
    gate = ConnectionGate(
        SmtpLimits(max_connections=3, max_connections_per_client=2), ManualClock()
    )
    assert gate.admit("192.0.2.1") is None
    assert gate.admit("192.0.2.1") is None
    assert gate.admit("192.0.2.1") == TOO_MANY_FROM_CLIENT
    assert gate.admit("192.0.2.2") is None
    assert gate.admit("192.0.2.3") == TOO_MANY_CONNECTIONS
    assert TOO_MANY_CONNECTIONS.startswith("421 4.7.0")
    gate.release("192.0.2.1")
    assert gate.admit("192.0.2.3") is None
    assert gate.open == 3
    for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        gate.release(ip)
    assert gate.open == 0
    assert not gate.by_client  # no client is remembered once its sessions are gone


def test_a_burst_of_refusals_is_logged_as_counts_with_the_client_ip(caplog):
    clock = ManualClock()
    gate = ConnectionGate(SmtpLimits(max_connections=1), clock)
    gate.admit("192.0.2.1")
    with caplog.at_level(logging.WARNING, logger="mxgate.ingress"):
        for _ in range(100):
            gate.admit("198.51.100.7")
        clock.advance(11)
        gate.admit("198.51.100.7")
    records = [r for r in caplog.records if r.getMessage() == "connections refused over the limit"]
    assert len(records) == 2
    assert records[0].client_ip == "198.51.100.7"
    assert records[1].refused == 100  # the 99 not logged one by one, and this one


def test_failed_auth_waits_longer_each_time_then_cuts_the_client_off(caplog):
    clock = ManualClock()
    guard = AuthGuard(SmtpLimits(auth_failures=3, auth_failure_delay=1, auth_lockout=900), clock)
    with caplog.at_level(logging.WARNING, logger="mxgate.ingress"):
        assert guard.failed("203.0.113.9") == (1, False)
        assert guard.failed("203.0.113.9") == (2, False)
        assert not guard.locked("203.0.113.9")
        assert guard.failed("203.0.113.9") == (4, True)
    assert guard.locked("203.0.113.9")
    assert not guard.locked("203.0.113.10")  # per client: others are not held up
    assert [r.client_ip for r in caplog.records] == ["203.0.113.9"] * 3
    assert caplog.records[-1].cut_off is True
    clock.advance(899)
    assert guard.locked("203.0.113.9")
    clock.advance(1)
    assert not guard.locked("203.0.113.9")  # the lockout has passed: forgiven
    assert guard.failed("203.0.113.9") == (1, False)
    assert AUTH_LOCKED.startswith("421 4.7.0")


def test_a_success_forgets_earlier_failures():
    guard = AuthGuard(SmtpLimits(auth_failures=2), ManualClock())
    guard.failed("203.0.113.9")
    guard.succeeded("203.0.113.9")
    assert guard.failed("203.0.113.9")[1] is False


def test_the_open_file_limit_makes_room_for_every_allowed_session():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limits = SmtpLimits(max_connections=min(soft, 2000))
    wanted = 2 * limits.max_connections + 1024
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))
        raised = raise_open_file_limit(limits)
        assert raised == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert raised >= min(wanted, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("field", ["max_connections", "max_connections_per_client"])
def test_limits_refuse_nonsense(field):
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        SmtpLimits.model_validate({field: 0})
