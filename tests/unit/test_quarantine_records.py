"""Quarantine records on SQLite: one record per message, release once, retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mxgate.adapters.local.quarantine import SqliteQuarantine
from mxgate.adapters.local.state import SqliteState
from mxgate.errors import PolicyError
from mxgate.records import (
    HeldRecipient,
    MessageRef,
    Outcome,
    QuarantineRecord,
    RecipientState,
    Stage,
)
from mxgate.workflow.quarantine import purge, release
from tests.fakes import ManualClock
from tests.support import shipped_routes


def record(clock: ManualClock, *recipients: str, days: int = 30) -> QuarantineRecord:
    return QuarantineRecord(
        quarantine_id="01Q",
        message_id="01Q",
        held_at=clock.now(),
        expires_at=clock.now() + timedelta(days=days),
        message=MessageRef(
            message_id="01Q",
            bucket="b",
            key="raw/01Q",
            digest="d" * 64,
            envelope_sender="x@y.example",
            size=1,
        ),
        recipients=[
            HeldRecipient(recipient=r, route="workspace", rule="r", reason="why")
            for r in recipients
        ],
    )


def test_release_once_and_retention(tmp_path):
    clock = ManualClock(datetime(2026, 11, 28, tzinfo=UTC))
    state = SqliteState(tmp_path / "state.db")
    quarantine = SqliteQuarantine(state)
    quarantine.hold(record(clock, "alice@nutrition.co"))
    quarantine.hold(
        record(clock, "bob@nutrition.co", "Alice@nutrition.co")
    )  # the same message again
    (kept,) = quarantine.records()
    assert [h.recipient for h in kept.recipients] == ["alice@nutrition.co", "bob@nutrition.co"]
    for recipient in ("alice@nutrition.co", "bob@nutrition.co"):
        state.settle(
            RecipientState(
                message_id="01Q", recipient=recipient, outcome=Outcome.QUARANTINED, at=clock.now()
            )
        )
    routes = shipped_routes()

    def release_it(to: str | None = None) -> list[str]:
        current = quarantine.get("01Q")
        assert current is not None
        queued = release(
            current,
            to=to,
            by="op",
            routes=routes,
            quarantine=quarantine,
            deferrals=state,
            timeline=state,
            clock=clock,
        )
        return [r for q in queued for r in q.delivery.recipients]

    with pytest.raises(PolicyError, match="--to RECIPIENT"):
        release_it("nobody@elsewhere.example")
    assert release_it() == ["alice@nutrition.co", "bob@nutrition.co"]
    assert state.states("01Q") == []  # reopened for the redelivery
    assert len(state.deferred("01Q")) == 1  # one delivery to workspace, both recipients
    assert release_it() == []
    assert release_it("carol@nutrition.co") == ["carol@nutrition.co"]
    assert release_it("carol@nutrition.co") == []
    assert [e.stage for e in state.events("01Q")].count(Stage.RELEASED) == 3

    deleted: list[tuple[str, str]] = []
    assert purge(quarantine, state, clock, lambda b, k: deleted.append((b, k))) == []
    clock.advance(31 * 86400)
    assert [
        r.quarantine_id for r in purge(quarantine, state, clock, deleted.append, dry_run=True)
    ] == ["01Q"]
    purge(quarantine, state, clock, lambda b, k: deleted.append((b, k)))
    assert list(quarantine.records()) == []
    assert deleted == []  # its recipients were released: the bytes stay for their deliveries


def test_delete_removes_the_bytes_of_a_record_no_recipient_settled(tmp_path):
    """A torn spool file without an envelope: its record names no recipient with a state, and
    nobody got (or was released) its bytes, so delete takes them too."""
    clock = ManualClock(datetime(2026, 11, 28, tzinfo=UTC))
    state = SqliteState(tmp_path / "state.db")
    quarantine = SqliteQuarantine(state)
    quarantine.hold(record(clock, "(unknown recipients)"))
    deleted: list[tuple[str, str]] = []
    clock.advance(31 * 86400)
    purge(quarantine, state, clock, lambda b, k: deleted.append((b, k)))
    assert list(quarantine.records()) == []
    assert deleted == [("b", "raw/01Q")]
