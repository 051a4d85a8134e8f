"""`mxgate trace`: the listing says when it shows only the most recent messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from mxgate.adapters.local.state import SqliteState
from mxgate.cli import main
from mxgate.records import Envelope, Outcome, RecipientState, Stage, TimelineEvent


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    state = SqliteState(home / "state.db")
    start = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
    for n in range(25):
        state.record(
            TimelineEvent(
                message_id=f"01M8{n:022d}",
                at=start + timedelta(seconds=n),
                stage=Stage.ACCEPTED,
                detail="100 bytes from 127.0.0.1 for 1 recipient(s)",
            )
        )
    state.close()
    return home


def listed(capsys):
    lines = capsys.readouterr().out.splitlines()
    return [line.split()[0] for line in lines[2:] if line.startswith("01M8")], lines[-1]


def test_the_listing_says_how_many_it_left_out(home, capsys):
    assert main(["trace", "--home", str(home)]) == 0
    ids, last = listed(capsys)
    assert len(ids) == 20
    assert ids[0] == f"01M8{24:022d}"  # most recent first
    assert last == "the 20 most recent of 25 messages; --limit N or --all for more"


def test_all_and_limit(home, capsys):
    assert main(["trace", "--home", str(home), "--all"]) == 0
    ids, last = listed(capsys)
    assert len(ids) == 25
    assert last.startswith("01M8")  # nothing left out, nothing said
    assert main(["trace", "--home", str(home), "--limit", "3", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (len(document["messages"]), document["total"]) == (3, 25)


def test_last_shows_the_most_recent_timeline(home, capsys):
    assert main(["trace", "--home", str(home), "--last"]) == 0
    assert capsys.readouterr().out.startswith(f"message 01M8{24:022d}\n")


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (["--limit", "0"], "argument --limit: must be 1 or more, not 0"),
        (["--limit", "3", "--all"], "argument --all: not allowed with argument --limit"),
        (["01M8", "--last"], "argument --last: not allowed with argument MESSAGE-ID"),
    ],
)
def test_options_that_contradict_are_usage_errors(home, capsys, arguments, complaint):
    with pytest.raises(SystemExit) as stopped:
        main(["trace", "--home", str(home), *arguments])
    assert stopped.value.code == 2
    assert complaint in capsys.readouterr().err


def test_a_replayed_message_whose_recipients_all_settled_is_not_in_progress(tmp_path, capsys):
    """A replay after a crash runs the rule set again: two `rules` events per recipient."""
    home = tmp_path / "replayed"
    state = SqliteState(home / "state.db")
    at = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
    events = [TimelineEvent(message_id="01REPLAY", at=at, stage=Stage.ACCEPTED)]
    for _ in range(2):  # the first run, and the replay's
        events += [
            TimelineEvent(message_id="01REPLAY", at=at, stage=Stage.RULES, recipient=r)
            for r in ("alice@nutrition.co", "Carol@nutrition.co")
        ]
    state.record_many(events)
    for recipient in ("alice@nutrition.co", "carol@nutrition.co"):
        state.settle(
            RecipientState(
                message_id="01REPLAY", recipient=recipient, outcome=Outcome.DELIVERED, at=at
            )
        )
    state.record(TimelineEvent(message_id="01OPEN", at=at, stage=Stage.ACCEPTED))
    state.record(
        TimelineEvent(message_id="01OPEN", at=at, stage=Stage.RULES, recipient="bob@nutrition.co")
    )
    state.close()
    assert main(["trace", "--home", str(home), "--json"]) == 0
    rows = {m["message_id"]: m for m in json.loads(capsys.readouterr().out)["messages"]}
    assert rows["01REPLAY"]["in_progress"] is False
    assert rows["01REPLAY"]["outcomes"] == {"delivered": 2}
    assert rows["01OPEN"]["in_progress"] is True


SPOOLED_BODY = b"Subject: hi\r\n\r\nhello\r\n"


def spooled(home, message_id: str = "01M9SPOOLED0000000000000000") -> Envelope:
    """A message answered 250 that no worker has taken yet: its spool file alone."""
    spool = home / "spool"
    spool.mkdir(exist_ok=True)
    envelope = Envelope(
        message_id=message_id,
        mail_from="a@shop.example",
        recipients=["alice@nutrition.co", "bob@nutrition.co"],
        source_ip="192.0.2.7",
    )
    (spool / f"{envelope.message_id}.msg").write_bytes(
        envelope.model_dump_json().encode() + b"\n" + SPOOLED_BODY
    )
    return envelope


def test_a_message_no_worker_has_taken_yet_is_traced_from_its_spool_file(home, capsys):
    """Between 250 and a worker taking it, the spool file is the message's whole record."""
    envelope = spooled(home)
    body = SPOOLED_BODY
    assert main(["trace", "01M9SPOOLED", "--json", "--home", str(home)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["message_id"] == envelope.message_id
    (event,) = document["events"]
    assert event["stage"] == Stage.ACCEPTED.value
    assert event["detail"] == f"{len(body)} bytes from 192.0.2.7 for 2 recipient(s)"
    assert (document["recipients"], document["deferred"]) == ([], [])
    assert main(["trace", envelope.message_id, "--home", str(home)]) == 0
    assert "recipients: none settled yet (in progress)" in capsys.readouterr().out
    assert main(["trace", "01M9OTHER", "--home", str(home)]) == 1
    assert "no message '01M9OTHER'" in capsys.readouterr().err


def test_the_listing_and_last_show_a_message_no_worker_has_taken_yet(home, capsys):
    """The spool file's message is listed first (in progress) and counted; --last is it; one
    the state database has already (a worker took it) is listed once, from there."""
    envelope = spooled(home)
    spooled(home, f"01M8{24:022d}")  # taken: its events are in the state database
    assert main(["trace", "--home", str(home), "--limit", "3", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["total"] == 26
    first, second, _ = document["messages"]
    assert (first["message_id"], first["in_progress"]) == (envelope.message_id, True)
    assert first["detail"] == f"{len(SPOOLED_BODY)} bytes from 192.0.2.7 for 2 recipient(s)"
    assert second["message_id"] == f"01M8{24:022d}"
    assert second["detail"] == "100 bytes from 127.0.0.1 for 1 recipient(s)"
    assert main(["trace", "--home", str(home)]) == 0
    ids, last = listed(capsys)
    assert ids[:2] == [f"01M8{24:022d}", f"01M8{23:022d}"]  # after the spooled one (01M9)
    assert last == "the 20 most recent of 26 messages; --limit N or --all for more"
    assert main(["trace", "--home", str(home), "--all", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["messages"]) == 26
    assert main(["trace", "--home", str(home), "--last"]) == 0
    assert capsys.readouterr().out.startswith(f"message {envelope.message_id}\n")
