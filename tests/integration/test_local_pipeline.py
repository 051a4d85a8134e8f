"""The local pipeline without the ingress: spool file -> rule set -> ASL workflow -> real SMTP
mailbox hosts on loopback, including the state machine's retries and dead letters, and the
rule set's own failures (a relay host answering 4xx or 5xx in direct mode, an object store
that cannot be written), crash replays, torn spool files and AddHeader versions."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mxgate.cli import main
from mxgate.local import worker as worker_process
from mxgate.local.bootstrap import Worker
from mxgate.local.pipeline import receive_spooled
from mxgate.local.rule_set_failures import KEPT_BUCKET
from mxgate.local.spool_quarantine import QUARANTINE_BUCKET
from mxgate.records import UNKNOWN_RECIPIENTS, DeferredDelivery, Outcome, Stage, StepRetry
from tests.support import REPO, SpooledFile
from tests.worker_harness import (
    LATER,
    RAW,
    accept,
    mailbox,
    mailbox_host_replies,
    outcomes,
    rule_set_log,
    run_due,
    wait_out_retries,
)

DIRECT = {"parameters": {"SubmissionIngress": "true", "DirectMode": "true"}}


def test_delivered_and_spool_file_removed(worker):
    path = accept(worker, "01DELIVERED", ["alice@nutrition.co", "carol@nutrition.co"])
    assert receive_spooled(worker, path) == "done"
    assert not path.exists()
    assert outcomes(worker, "01DELIVERED") == {
        "alice@nutrition.co": Outcome.DELIVERED,
        "carol@nutrition.co": Outcome.DELIVERED,
    }
    stored = next((worker.setup.dirs.mailboxes / "m365" / "carol@nutrition.co" / "new").iterdir())
    assert stored.read_bytes().endswith(RAW)


def test_a_recovered_spool_file_gets_one_accepted_event_dated_at_its_250(worker):
    # the ingress writes no event: a file whose worker never ran (a crash, a restart) gets its
    # `accepted` event from the worker that takes it, dated by the file (its last write)
    path = accept(worker, "01RECOVERED", ["carol@nutrition.co"])
    answered = datetime(2026, 12, 1, 9, 30, 15, 250000, tzinfo=UTC)
    os.utime(path, (answered.timestamp(), answered.timestamp()))
    spooled = SpooledFile.of(path)
    assert receive_spooled(worker, path) == "done"
    spooled.restore(path)  # a crash before the file went: the next start replays it
    os.utime(path, (answered.timestamp(), answered.timestamp()))
    assert receive_spooled(worker, path) == "already done"  # its recipient has her end
    events = worker.state.events("01RECOVERED")
    accepted = [(e.at, e.detail) for e in events if e.stage is Stage.ACCEPTED]
    assert accepted == [(answered, f"{len(RAW)} bytes from 192.0.2.1 for 1 recipient(s)")]
    assert events[0].stage is Stage.ACCEPTED
    assert outcomes(worker, "01RECOVERED") == {"carol@nutrition.co": Outcome.DELIVERED}


def test_outage_is_retried_then_deferred_then_delivered_when_the_host_is_back(worker):
    mailbox_host_replies(worker, "workspace", "451 4.3.0 mailbox host busy")
    path = accept(worker, "01OUTAGE", ["alice@nutrition.co", "carol@nutrition.co"])
    assert receive_spooled(worker, path) == "done"
    assert not path.exists()  # alice's next attempt is recorded: the spool file may go
    (waiting,) = [w.record for w in worker.state.deferred("01OUTAGE")]
    assert isinstance(waiting, StepRetry)  # her retry waits in the queue, not in the worker
    assert (waiting.execution.state, waiting.recipients) == ("DeliverOne", ["alice@nutrition.co"])
    assert wait_out_retries(worker) == 3
    # the state machine's quick retries, then the deferred queue: no terminal state yet
    assert outcomes(worker, "01OUTAGE") == {"carol@nutrition.co": Outcome.DELIVERED}
    retries = [e for e in worker.state.events("01OUTAGE") if e.stage is Stage.RETRY]
    assert len(retries) == 3  # MaxAttempts of DeliverOne's Retry in the ASL
    assert not dict(worker.state.list())  # nothing dead-lettered

    mailbox_host_replies(worker, "workspace", None)
    later = worker.clock.now() + timedelta(days=1)
    (record,) = worker.state.lease_due(later, 60)
    assert isinstance(record, DeferredDelivery)
    assert worker_process.run_due(record.model_dump_json()) == "done"
    assert outcomes(worker, "01OUTAGE") == {
        "alice@nutrition.co": Outcome.DELIVERED,
        "carol@nutrition.co": Outcome.DELIVERED,
    }
    assert worker.state.lease_due(later, 60) == []


def test_permanent_refusal_is_dead_lettered_without_retries(worker):
    mailbox_host_replies(worker, "m365", "550 5.1.1 no such mailbox")
    path = accept(worker, "01REFUSED", ["dave@nutrition.co"])
    receive_spooled(worker, path)
    assert outcomes(worker, "01REFUSED") == {"dave@nutrition.co": Outcome.DEAD_LETTERED}
    assert not [e for e in worker.state.events("01REFUSED") if e.stage is Stage.RETRY]
    assert "550 5.1.1 no such mailbox" in worker.state.states("01REFUSED")[0].detail


def test_replaying_a_finished_message_delivers_nothing_twice(worker):
    path = accept(worker, "01TWICE", ["bob@nutrition.co"])
    raw_spool = SpooledFile.of(path)
    receive_spooled(worker, path)
    raw_spool.restore(path)  # as if the process had crashed before removing the spool file
    receive_spooled(worker, path)
    mailbox = worker.setup.dirs.mailboxes / "workspace" / "bob@nutrition.co" / "new"
    assert len(list(mailbox.iterdir())) == 1


def test_a_message_the_rule_set_cannot_take_is_quarantined_not_lost(worker, capsys):
    """A spool file from an ingress point the template no longer has: a real failure inside
    processing, which quarantines the message whole, with a record the operator acts on."""
    path = accept(worker, "01GONEPOINT", ["alice@nutrition.co"], ingress_point="RemovedPoint")
    assert receive_spooled(worker, path) == "quarantined"
    assert not path.exists()
    (state,) = worker.state.states("01GONEPOINT")
    assert state.outcome is Outcome.QUARANTINED
    assert "unknown ingress point 'RemovedPoint'" in state.detail
    objects = worker.mail_manager.actions.objects
    assert objects.get(QUARANTINE_BUCKET, "spool/01GONEPOINT.msg") == RAW  # the message alone
    home = ["--home", str(worker.setup.dirs.home)]
    assert main(["quarantine", "list", "--json", *home]) == 0
    (record,) = json.loads(capsys.readouterr().out)["quarantined"]
    assert (record["quarantine_id"], record["source"]) == ("01GONEPOINT", "internal_error")
    assert record["held"] == ["alice@nutrition.co"]
    assert "unknown ingress point 'RemovedPoint'" in record["reason"]
    assert main(["quarantine", "show", "01GONEPOINT", "--raw", *home]) == 0
    assert capsys.readouterr().out.encode() == RAW
    # released: delivered through the normal steps to the route she has
    assert main(["quarantine", "release", "01GONEPOINT", *home]) == 0
    assert run_due(worker) == ["done"]
    assert outcomes(worker, "01GONEPOINT") == {"alice@nutrition.co": Outcome.DELIVERED}
    assert mailbox(worker, "workspace", "alice@nutrition.co")[0].endswith(RAW)


# ------------------------------------------------------------------ rule actions that fail


def test_a_relay_outage_in_direct_mode_is_retried_from_the_kept_spool_file(workers, capsys):
    worker = workers(**DIRECT)
    mailbox_host_replies(worker, "workspace", "451 4.3.0 try later")
    path = accept(worker, "01RELAYOUTAGE", ["alice@nutrition.co"])
    assert receive_spooled(worker, path) == "retrying"
    assert path.exists()  # kept until the rule set is done with alice
    assert outcomes(worker, "01RELAYOUTAGE") == {}  # neither dropped nor anything else yet
    assert not dict(worker.state.list())
    (deferred,) = [e for e in worker.state.events("01RELAYOUTAGE") if e.stage is Stage.DEFERRED]
    assert deferred.recipient == "alice@nutrition.co"
    assert "rule direct-workspace: Relay: relay WorkspaceRelay" in deferred.detail
    assert "451 4.3.0 try later; retry 1, next attempt" in deferred.detail
    (record,) = rule_set_log(worker)[-1:]
    assert (record["action_name"], record["action_status"]) == ("Relay", "FAILURE")

    home = str(worker.setup.dirs.home)  # `mxgate trace` shows the retry waiting
    assert main(["trace", "01RELAYOUTAGE", "--home", home]) == 0
    shown = capsys.readouterr().out
    assert "deferred: rule set retry 1 for alice@nutrition.co: next attempt" in shown
    assert "451 4.3.0 try later" in shown.rsplit("deferred: rule set retry 1", 1)[1]
    assert main(["trace", "01RELAYOUTAGE", "--home", home, "--json"]) == 0
    (waiting,) = json.loads(capsys.readouterr().out)["deferred"]
    assert (waiting["kind"], waiting["message_id"]) == ("rule-set-retry", "01RELAYOUTAGE")

    assert receive_spooled(worker, path) == "retry pending"  # a replay on start: left to it
    assert run_due(worker, worker.clock.now()) == []  # not due before backoff_min (5m)
    assert run_due(worker) == ["retrying"]  # still down: the same record, due later
    assert path.exists()
    mailbox_host_replies(worker, "workspace", None)
    assert run_due(worker) == ["done"]
    assert outcomes(worker, "01RELAYOUTAGE") == {"alice@nutrition.co": Outcome.DELIVERED}
    assert not path.exists()
    (stored,) = mailbox(worker, "workspace", "alice@nutrition.co")
    assert stored.endswith(RAW)
    assert worker.state.lease_due(worker.clock.now() + LATER, 60) == []
    stages = [e.stage for e in worker.state.events("01RELAYOUTAGE")]
    assert stages.count(Stage.RULES) == 1  # the retries are `retry` events
    assert stages.count(Stage.RETRY) == 2


def test_a_relay_refusal_in_direct_mode_is_dead_lettered_then_redriven_once(workers, capsys):
    worker = workers(**DIRECT)
    home = str(worker.setup.dirs.home)
    mailbox_host_replies(worker, "workspace", "550 5.7.1 relaying denied")
    recipients = ["alice@nutrition.co", "orders@customer-support.nutrition.co"]
    path = accept(worker, "01RELAYREFUSED", recipients)
    assert receive_spooled(worker, path) == "done"
    assert not path.exists()
    assert outcomes(worker, "01RELAYREFUSED") == {
        "alice@nutrition.co": Outcome.DEAD_LETTERED,
        "orders@customer-support.nutrition.co": Outcome.HANDED_TO_APP,  # not affected
    }
    (record,) = list(worker.state.list())
    record_id = record.record_id
    assert record_id.startswith("01RELAYREFUSED.rule-set.")
    assert (record.kind, record.recipients, record.error) == (
        "rules",
        ["alice@nutrition.co"],
        "PermanentError",
    )
    assert "550 5.7.1 relaying denied" in record.reason
    kept = worker.mail_manager.actions.objects.get(KEPT_BUCKET, "rules/01RELAYREFUSED")
    assert kept == RAW  # as received, to run through the rule set again

    assert main(["dlq", "list", "--home", home]) == 0
    listing = capsys.readouterr().out
    assert record_id in listing
    assert "rules RuleSet" in listing
    assert main(["dlq", "show", record_id, "--home", home]) == 0
    shown = capsys.readouterr().out
    assert "rule actions of rule set RuleSet" in shown
    assert f"{KEPT_BUCKET}/rules/01RELAYREFUSED" in shown
    assert "alice@nutrition.co: rule direct-workspace: Relay:" in shown

    mailbox_host_replies(worker, "workspace", None)  # the relay takes mail again
    assert main(["dlq", "redrive", record_id, "--home", home]) == 0
    assert "1 recipient(s) queued" in capsys.readouterr().out
    assert outcomes(worker, "01RELAYREFUSED") == {
        "orders@customer-support.nutrition.co": Outcome.HANDED_TO_APP
    }
    assert run_due(worker, datetime.now(UTC))  # the CLI redrove it by the system clock == ["done"]
    assert outcomes(worker, "01RELAYREFUSED")["alice@nutrition.co"] is Outcome.DELIVERED
    assert len(mailbox(worker, "workspace", "alice@nutrition.co")) == 1
    assert not dict(worker.state.list())
    assert len(list((worker.setup.dirs.events / "orders").iterdir())) == 1  # not handed twice
    assert main(["dlq", "redrive", record_id, "--home", home]) == 1  # gone


def test_a_relay_outage_past_its_lifetime_is_dead_lettered(workers):
    worker = workers(delivery={"queue_lifetime": "0.3s"}, **DIRECT)
    mailbox_host_replies(worker, "workspace", "421 4.3.2 closing channel")
    path = accept(worker, "01EXPIRES", ["alice@nutrition.co"])
    assert receive_spooled(worker, path) == "retrying"
    worker.clock.sleep(0.35)  # past the lifetime
    assert run_due(worker) == ["done"]
    assert not path.exists()
    (state,) = worker.state.states("01EXPIRES")
    assert state.outcome is Outcome.DEAD_LETTERED
    assert "gave up after 1 rule set retries" in state.detail
    assert "421 4.3.2 closing channel" in state.detail
    (record,) = list(worker.state.list())
    assert record.error == "Expired"


def raw_bucket(worker: Worker) -> str:
    rule_set = worker.setup.rule_sets()["IngressPoint"]
    (bucket,) = {a.WriteToS3.S3Bucket for r in rule_set.Rules for a in r.Actions if a.WriteToS3}
    return bucket


def test_an_object_store_that_cannot_be_written_is_retried_not_dropped(worker):
    blocked = worker.setup.dirs.objects / raw_bucket(worker)
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("a file where the bucket's directory should be")
    path = accept(worker, "01NOBUCKET", ["alice@nutrition.co"])
    assert receive_spooled(worker, path) == "retrying"
    assert outcomes(worker, "01NOBUCKET") == {}
    (deferred,) = [e for e in worker.state.events("01NOBUCKET") if e.stage is Stage.DEFERRED]
    assert "WriteToS3: NotADirectoryError" in deferred.detail

    blocked.unlink()
    assert run_due(worker) == ["done"]
    assert outcomes(worker, "01NOBUCKET") == {"alice@nutrition.co": Outcome.DELIVERED}
    assert len(mailbox(worker, "workspace", "alice@nutrition.co")) == 1
    assert not path.exists()


def test_a_replay_after_a_crash_in_direct_mode_relays_nothing_twice(workers):
    worker = workers(**DIRECT)
    path = accept(worker, "01CRASHED", ["alice@nutrition.co", "bob@nutrition.co"])
    spooled = SpooledFile.of(path)
    assert receive_spooled(worker, path) == "done"
    assert len(mailbox(worker, "workspace", "alice@nutrition.co")) == 1
    # The worker died after the relay and before the spool file went and alice was settled:
    # on start, the file is replayed with her state missing.
    spooled.restore(path)
    worker.state.reopen("01CRASHED", "alice@nutrition.co")
    assert receive_spooled(worker, path) == "done"
    assert outcomes(worker, "01CRASHED") == {
        "alice@nutrition.co": Outcome.DELIVERED,
        "bob@nutrition.co": Outcome.DELIVERED,
    }
    assert len(mailbox(worker, "workspace", "alice@nutrition.co")) == 1
    assert len(mailbox(worker, "workspace", "bob@nutrition.co")) == 1
    relays = [r for r in rule_set_log(worker) if r["action_name"] == "Relay"]
    assert [r["action_status"] for r in relays] == ["SUCCESS", "SUCCESS"]
    assert "already done for 2 recipient(s); not repeated" in relays[-1]["detail"]


# ------------------------------------------------------------------ spool files


@pytest.mark.parametrize(
    ("content", "readable"),
    [
        (b"", False),
        (b'{"message_id": "01TORN", "mail_fr', False),
        (
            b'{"message_id": "01TORN", "mail_from": "a@b.example", "recipients": ["alice@nutrition.co"]}',
            True,
        ),
    ],
    ids=["empty", "torn-envelope", "envelope-without-body"],
)
def test_an_unreadable_spool_file_is_quarantined_once(worker, content, readable, capsys):
    path = worker.spool.directory / "01TORN.msg"
    path.write_bytes(content)
    assert receive_spooled(worker, path) == "quarantined"
    assert not path.exists()
    objects = worker.mail_manager.actions.objects
    assert objects.get(QUARANTINE_BUCKET, "spool/01TORN.msg") == content
    events = worker.state.events("01TORN")
    (event,) = [e for e in events if e.recipient is None and e.stage is not Stage.ACCEPTED]
    assert event.stage is Stage.TERMINAL
    # accepted with 250 (the ingress does not check the envelope line): on the timeline too
    assert [e.stage for e in events if e.stage is Stage.ACCEPTED] == [Stage.ACCEPTED] * readable
    assert "spool file 01TORN.msg is unreadable" in event.detail
    assert f"{QUARANTINE_BUCKET}/spool/01TORN.msg" in event.detail
    expected = {"alice@nutrition.co": Outcome.QUARANTINED} if readable else {}
    assert outcomes(worker, "01TORN") == expected
    assert receive_spooled(worker, path) == "already done"  # a restart finds nothing to redo
    # the operator's view: a quarantine record, which shows the kept bytes and can be deleted
    home = ["--home", str(worker.setup.dirs.home)]
    assert main(["quarantine", "list", "--json", *home]) == 0
    (record,) = json.loads(capsys.readouterr().out)["quarantined"]
    assert record["quarantine_id"] == "01TORN"
    assert "spool file 01TORN.msg is unreadable" in json.dumps(record)
    held = [h["recipient"] for h in record["recipients"]]
    assert held == (["alice@nutrition.co"] if readable else [UNKNOWN_RECIPIENTS])
    assert main(["quarantine", "show", "01TORN", "--raw", *home]) == 0
    assert capsys.readouterr().out.encode() == content
    assert main(["quarantine", "delete", "01TORN", *home]) == 0
    # its bytes go with it: nobody got them (its recipients, if known, are quarantined)
    assert not objects.exists(QUARANTINE_BUCKET, "spool/01TORN.msg")


# ------------------------------------------------------------------ AddHeader versions


def tagging_template(directory: Path) -> Path:
    """template.yaml with one more rule: bob's copy gets an X-Tag field, alice's does not."""
    text = (REPO / "template.yaml").read_text()
    rule = (
        "        - Name: tag-bob\n"
        "          Conditions:\n"
        "            - StringExpression:\n"
        "                Evaluate: {Attribute: RECIPIENT}\n"
        "                Operator: EQUALS\n"
        "                Values: [bob@nutrition.co]\n"
        "          Actions:\n"
        "            - AddHeader: {HeaderName: X-Tag, HeaderValue: bob}\n"
    )
    marker = "        - Name: archive\n"
    assert text.count(marker) == 1
    (directory / "template.yaml").write_text(text.replace(marker, rule + marker))
    shutil.copytree(REPO / "statemachine", directory / "statemachine")
    return directory / "template.yaml"


def test_addheader_versions_are_stored_apart_and_delivered_each_to_its_recipients(
    workers, tmp_path
):
    (tmp_path / "tagged").mkdir()
    worker = workers(template=str(tagging_template(tmp_path / "tagged")))
    mailbox_host_replies(worker, "workspace", "451 4.3.0 later")
    path = accept(worker, "01SPLIT", ["alice@nutrition.co", "bob@nutrition.co"])
    assert receive_spooled(worker, path) == "done"  # with the workflow: deferred deliveries
    wait_out_retries(worker)
    objects, bucket = worker.mail_manager.actions.objects, raw_bucket(worker)
    alice, bob = (objects.get(bucket, f"raw/01SPLIT.variant-{n}") for n in (1, 2))
    assert b"X-Tag" not in alice
    assert bob.startswith(b"X-Tag: bob\r\n")
    assert not objects.exists(bucket, "raw/01SPLIT")  # never one copy for both
    archived = sorted(p.name for p in (worker.setup.dirs.objects / "mxgate-archive").rglob("*.eml"))
    assert archived == ["01SPLIT.variant-1.eml", "01SPLIT.variant-2.eml"]
    waiting = {tuple(w.record.recipients) for w in worker.state.deferred("01SPLIT")}
    # two records, not one: each workflow run had the envelope of its own version's recipients
    assert waiting == {("alice@nutrition.co",), ("bob@nutrition.co",)}

    mailbox_host_replies(worker, "workspace", None)
    assert run_due(worker) == ["done", "done"]
    assert outcomes(worker, "01SPLIT") == {
        "alice@nutrition.co": Outcome.DELIVERED,
        "bob@nutrition.co": Outcome.DELIVERED,
    }
    (to_alice,) = mailbox(worker, "workspace", "alice@nutrition.co")
    (to_bob,) = mailbox(worker, "workspace", "bob@nutrition.co")
    assert b"X-Tag: bob" not in to_alice
    assert b"X-Tag: bob" in to_bob
