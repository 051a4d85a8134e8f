"""`--since` / `--until` count back from the clock of the command's composition root (the one
its desk and records use), so a test pins it: `main(argv, clock=...)`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from mxgate.adapters.local.quarantine import SqliteQuarantine
from mxgate.archive.query import ArchivedMessage
from mxgate.cli import main
from mxgate.local.bootstrap import Bootstrap
from mxgate.local.settings import LocalSettings
from mxgate.records import (
    HeldRecipient,
    MessageSummary,
    QuarantineRecord,
    Stage,
    TimelineEvent,
)
from tests.fakes import ManualClock
from tests.records import a_delivery

PINNED = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)  # long ago, whenever the test runs
TIMES = {"01OLD": PINNED - timedelta(hours=2), "01NEW": PINNED - timedelta(minutes=10)}


@pytest.fixture
def home(tmp_path):
    """A gateway's state with one message two hours before the pinned time, one ten minutes
    before: traced, quarantined and archived."""
    home = tmp_path / "home"
    bootstrap = Bootstrap(LocalSettings(home=home))
    state = bootstrap.state()
    archive = bootstrap.archive()
    for message_id, at in TIMES.items():
        summary = MessageSummary(envelope_sender="a@shop.example", subject=message_id)
        state.record(
            TimelineEvent(message_id=message_id, at=at, stage=Stage.PARSED, summary=summary)
        )
        held = HeldRecipient(
            recipient="alice@nutrition.co", route="workspace", rule="r", reason="x"
        )
        SqliteQuarantine(state).hold(
            QuarantineRecord(
                quarantine_id=message_id,
                message_id=message_id,
                held_at=at,
                message=a_delivery(message_id).message,
                recipients=[held],
            )
        )
        archive.add(
            ArchivedMessage(
                archived_message_id=message_id, archive_id="a", received_at=at, subject=message_id
            )
        )
    archive.close()
    state.close()
    return home


@pytest.mark.parametrize(
    ("command", "listed", "key"),
    [
        (["trace"], "messages", "message_id"),
        (["quarantine", "list"], "quarantined", "quarantine_id"),
        (["archive", "search"], "messages", "archived_message_id"),
    ],
)
def test_since_counts_back_from_the_composition_roots_clock(home, capsys, command, listed, key):
    def found(*since: str) -> list[str]:
        argv = [*command, *since, "--json", "--home", str(home)]
        assert main(argv, clock=ManualClock(PINNED)) == 0
        return sorted(row[key] for row in json.loads(capsys.readouterr().out)[listed])

    assert found("--since", "1h") == ["01NEW"]
    assert found("--since", "3h") == ["01NEW", "01OLD"]
    assert found("--since", (PINNED - timedelta(hours=1)).isoformat()) == ["01NEW"]
