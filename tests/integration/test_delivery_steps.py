"""Delivery through the real state machine definition and step code, on real SMTP mailbox
hosts: retries, deferral, expiry (DSN or dead letter), per-recipient failures, redrive,
claim checks and idempotency. Time is fake, so days of deferral take milliseconds."""

from __future__ import annotations

from email import message_from_bytes, policy
from pathlib import Path

from tests.delivery_harness import SENDER, Bench, message, routes_with

TEMPFAIL = "451 4.3.2 System not accepting network messages"
NO_SUCH_USER = "550 5.1.1 No such user"


def test_a_transient_failure_is_retried_then_deferred_then_delivered(benches):
    bench = benches()
    bench.host_answers("workspace", TEMPFAIL)
    message_id = bench.store(message("alice@nutrition.co", "outage"), ["alice@nutrition.co"])
    bench.run(message_id)

    stages = bench.stages(message_id)
    assert stages.count("retry") == 3  # the ASL's Retry: MaxAttempts 3
    assert "deferred" in stages
    assert bench.outcomes(message_id) == {}  # not settled: waiting
    (waiting,) = bench.deferred()
    deferral = waiting.delivery.deferral
    assert deferral is not None
    assert deferral.attempts == 1
    assert TEMPFAIL in deferral.last_error
    due = waiting.due_at
    wait = (due - bench.clock.now()).total_seconds()
    assert 270 <= wait <= 330  # backoff_min 5m, ±10%

    assert bench.run_due() == 0  # not due yet
    bench.clock.current = due
    assert bench.run_due() == 1  # due, still failing: deferred again, waiting longer
    (waiting,) = bench.deferred()
    assert waiting.delivery.deferral is not None
    assert waiting.delivery.deferral.attempts == 2

    bench.host_answers("workspace", None)  # the host is back
    bench.run_until_settled(message_id, 1)
    assert bench.outcomes(message_id) == {"alice@nutrition.co": "delivered"}
    assert len(bench.received("workspace", "alice@nutrition.co")) == 1
    assert bench.deferred() == []


def test_expiry_sends_the_sender_a_dsn(benches):
    bench = benches(routes_with(delivery={"queue_lifetime": "1h", "backoff_max": "20m"}))
    bench.host_answers("m365", TEMPFAIL)
    message_id = bench.store(message("carol@nutrition.co", "never"), ["carol@nutrition.co"])
    bench.run(message_id)
    bench.run_until_settled(message_id, 1)

    assert bench.outcomes(message_id) == {"carol@nutrition.co": "bounced"}
    deferrals = [e for e in bench.state.events(message_id) if e.stage.value == "deferred"]
    assert 3 <= len(deferrals) <= 8  # 5m, 10m, 20m, 20m... within the hour
    (dsn,) = bench.received("outside", SENDER)
    report = message_from_bytes(dsn, policy=policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report["From"] == "Mail Delivery System <mailer-daemon@nutrition.co>"
    status = report.get_payload()[1].get_payload()
    assert status[1]["Final-Recipient"] == "rfc822; carol@nutrition.co"
    assert status[1]["Status"] == "4.4.7"
    assert TEMPFAIL in status[1]["Diagnostic-Code"]
    assert bench.received("m365", "carol@nutrition.co") == []
    assert bench.deferred() == []
    assert dsn.startswith(b"Return-Path: <>")  # sent from the null sender


def test_expiry_without_dsn_dead_letters(benches):
    bench = benches(routes_with(delivery={"queue_lifetime": "30m", "dsn_on_expiry": False}))
    bench.host_answers("workspace", TEMPFAIL)
    message_id = bench.store(message("bob@nutrition.co", "later"), ["bob@nutrition.co"])
    bench.run(message_id)
    bench.run_until_settled(message_id, 1)
    assert bench.outcomes(message_id) == {"bob@nutrition.co": "dead_lettered"}
    (record,) = list(bench.state.list())
    assert record.error == "Expired"
    assert record.recipients == ["bob@nutrition.co"]
    assert bench.received("outside", SENDER) == []


def test_no_dsn_for_the_null_sender(benches):
    bench = benches(routes_with(delivery={"queue_lifetime": "30m"}))
    bench.host_answers("workspace", TEMPFAIL)
    message_id = bench.store(
        message("bob@nutrition.co", "a bounce"), ["bob@nutrition.co"], mail_from=""
    )
    bench.run(message_id)
    bench.run_until_settled(message_id, 1)
    assert bench.outcomes(message_id) == {"bob@nutrition.co": "dead_lettered"}
    assert not list(bench.mailbox_dir("outside").glob("*/new/*"))


def test_a_permanent_failure_is_dead_lettered_at_once_and_redriven_once_fixed(benches):
    bench = benches()
    bench.host_answers("workspace", NO_SUCH_USER)
    message_id = bench.store(message("alice@nutrition.co", "refused"), ["alice@nutrition.co"])
    bench.run(message_id)
    assert "retry" not in bench.stages(message_id)  # permanent: no retry, no deferral
    assert bench.outcomes(message_id) == {"alice@nutrition.co": "dead_lettered"}
    (record,) = list(bench.state.list())
    record_id = record.record_id
    assert record.error == "PermanentError"
    assert NO_SUCH_USER in record.reason

    bench.host_answers("workspace", None)
    bench.redrive(record_id)
    assert list(bench.state.list()) == []
    assert bench.outcomes(message_id) == {}  # reopened
    assert bench.run_due() == 1
    assert bench.outcomes(message_id) == {"alice@nutrition.co": "delivered"}
    assert len(bench.received("workspace", "alice@nutrition.co")) == 1
    assert "redriven" in bench.stages(message_id)


def test_a_redriven_delivery_that_already_succeeded_is_not_sent_twice(benches):
    bench = benches()
    bench.host_answers("workspace", NO_SUCH_USER)
    message_id = bench.store(message("alice@nutrition.co", "twice"), ["alice@nutrition.co"])
    bench.run(message_id)
    (record,) = list(bench.state.list())
    record_id = record.record_id
    bench.host_answers("workspace", None)

    def again() -> None:
        bench.redrive(record_id)
        bench.run_due()

    again()
    assert len(bench.received("workspace", "alice@nutrition.co")) == 1
    # the same dead letter comes back (a stale copy, a second operator) and is redriven again
    bench.state.put(record)
    again()
    assert len(bench.received("workspace", "alice@nutrition.co")) == 1
    assert bench.outcomes(message_id) == {"alice@nutrition.co": "delivered"}
    # and a duplicate S3 event for the message delivers nothing either
    bench.run(message_id)
    assert len(bench.received("workspace", "alice@nutrition.co")) == 1


def test_per_recipient_results_permanent_now_transient_later(benches):
    bench = benches()
    handler_dir = bench.mailbox_dir("workspace")
    message_id = bench.store(
        message("alice@nutrition.co, bob@nutrition.co, erin@nutrition.co", "mixed"),
        ["alice@nutrition.co", "bob@nutrition.co", "erin@nutrition.co"],
    )
    # alice: accepted; bob: 550; erin: 451 (the mailbox host's per-recipient reply files)
    (handler_dir / ".reply-bob@nutrition.co").write_text(NO_SUCH_USER)
    (handler_dir / ".reply-erin@nutrition.co").write_text(TEMPFAIL)
    bench.run(message_id)
    outcomes = bench.outcomes(message_id)
    assert outcomes == {"alice@nutrition.co": "delivered", "bob@nutrition.co": "dead_lettered"}
    (waiting,) = bench.deferred()
    assert waiting.delivery.recipients == ["erin@nutrition.co"]
    (record,) = list(bench.state.list())
    record_id = record.record_id
    assert record.recipients == ["bob@nutrition.co"]
    assert record_id.startswith(f"{message_id}.workspace.0.")
    (handler_dir / ".reply-erin@nutrition.co").unlink()
    bench.run_until_settled(message_id, 3)
    assert bench.outcomes(message_id)["erin@nutrition.co"] == "delivered"
    assert len(bench.received("workspace", "alice@nutrition.co")) == 1  # never twice
    assert len(bench.received("workspace", "erin@nutrition.co")) == 1


def test_oversize_claim_check(benches):
    bench = benches(routes_with(delivery={"max_message_bytes": 2000}))
    big = message("alice@nutrition.co", "big one", "x" * 70 + "\r\n") * 1
    big = big + (b"y" * 70 + b"\r\n") * 60
    message_id = bench.store(big, ["alice@nutrition.co"])
    bench.run(message_id)
    assert bench.outcomes(message_id) == {"alice@nutrition.co": "delivered"}
    (stub,) = bench.received("workspace", "alice@nutrition.co")
    parsed = message_from_bytes(stub, policy=policy.default)
    assert parsed["Subject"] == "[too large to deliver] big one"
    link = parsed["X-Mxgate-Claim-Check"]
    assert link.startswith("file://")
    assert Path(link.removeprefix("file://")).read_bytes() == big
    assert "by mxgate.test (mxgate) with ESMTP" in parsed["Received"]  # trace fields still on top
    (state,) = bench.state.states(message_id)
    assert "claim check" in state.detail


def test_oversize_dead_letter_policy(benches):
    bench = benches(routes_with(delivery={"max_message_bytes": 2000, "oversize": "dead_letter"}))
    big = message("alice@nutrition.co", "big", "z" * 70 + "\r\n") + (b"z" * 70 + b"\r\n") * 60
    message_id = bench.store(big, ["alice@nutrition.co"])
    bench.run(message_id)
    assert bench.outcomes(message_id) == {"alice@nutrition.co": "dead_lettered"}
    (record,) = list(bench.state.list())
    assert record.error == "PolicyError"
    assert "over the 2000-byte limit" in record.reason
    assert bench.received("workspace", "alice@nutrition.co") == []


def test_a_duplicate_execution_delivers_once(benches):
    bench = benches()
    message_id = bench.store(
        message("alice@nutrition.co, carol@nutrition.co", "dup"),
        ["alice@nutrition.co", "carol@nutrition.co"],
    )
    bench.run(message_id)
    bench.run(message_id)  # S3 events are delivered at least once
    assert len(bench.received("workspace", "alice@nutrition.co")) == 1
    assert len(bench.received("m365", "carol@nutrition.co")) == 1
    assert bench.outcomes(message_id) == {
        "alice@nutrition.co": "delivered",
        "carol@nutrition.co": "delivered",
    }


def test_more_than_fifty_recipients_are_split(benches):
    bench = benches()
    recipients = [f"user{n:03d}@nutrition.co" for n in range(120)]
    message_id = bench.store(message("all@nutrition.co", "all hands"), recipients)
    result = bench.run(message_id)
    sizes = [len(r["results"]) for r in result["results"]]
    assert sizes == [50, 50, 20]
    assert set(bench.outcomes(message_id).values()) == {"delivered"}


PARTS = ["alice@nutrition.co", "bob@nutrition.co", "erin@nutrition.co"]


def split_delivery(bench: Bench, subject: str) -> tuple[str, str]:
    """One delivery to alice (accepted), bob (refused: dead-lettered at once) and erin
    (try later: deferred); the message id and bob's dead letter."""
    handler_dir = bench.mailbox_dir("workspace")
    message_id = bench.store(message(", ".join(PARTS), subject), PARTS)
    (handler_dir / ".reply-bob@nutrition.co").write_text(NO_SUCH_USER)
    (handler_dir / ".reply-erin@nutrition.co").write_text(TEMPFAIL)
    bench.run(message_id)
    (bob,) = list(bench.state.list())
    bob_record = bob.record_id
    return message_id, bob_record


def test_a_redriven_part_deferred_again_leaves_the_other_deferral_waiting(benches):
    """A redrive keeps the delivery id and counts attempts from one again: its deferral must
    not take the record of another part of the same delivery that still waits."""
    bench = benches()
    handler_dir = bench.mailbox_dir("workspace")
    message_id, bob_record = split_delivery(bench, "parts")
    (handler_dir / ".reply-bob@nutrition.co").write_text(TEMPFAIL)  # bob's host, half fixed
    bench.redrive(bob_record)
    assert bench.run_due() == 1  # the redriven part only: it fails again and is deferred
    waiting = {
        tuple(w.delivery.recipients): w.delivery.deferral.attempts if w.delivery.deferral else 0
        for w in bench.deferred()
    }
    assert waiting == {("erin@nutrition.co",): 1, ("bob@nutrition.co",): 1}

    for name in (".reply-bob@nutrition.co", ".reply-erin@nutrition.co"):
        (handler_dir / name).unlink()
    bench.run_until_settled(message_id, 3)
    assert set(bench.outcomes(message_id).values()) == {"delivered"}
    for recipient in PARTS:
        assert len(bench.received("workspace", recipient)) == 1
    assert bench.deferred() == []


def test_a_redriven_part_dead_lettered_again_keeps_the_other_dead_letter(benches):
    """The part left in the deferred queue expires into a dead letter under the delivery's
    id; the redriven part failing again must not write over it."""
    bench = benches(routes_with(delivery={"queue_lifetime": "30m", "dsn_on_expiry": False}))
    message_id, bob_record = split_delivery(bench, "twice dead")
    bench.run_until_settled(message_id, 3)  # erin expires: a dead letter of her own
    assert {r.record_id for r in bench.state.list()} == {
        bob_record,
        f"{message_id}.workspace.0",
    }
    bench.redrive(bob_record)
    assert bench.run_due() == 1  # bob is still refused: dead-lettered again
    held = {tuple(r.recipients) for r in bench.state.list()}
    assert held == {("bob@nutrition.co",), ("erin@nutrition.co",)}
    assert bench.outcomes(message_id) == {
        "alice@nutrition.co": "delivered",
        "bob@nutrition.co": "dead_lettered",
        "erin@nutrition.co": "dead_lettered",
    }
