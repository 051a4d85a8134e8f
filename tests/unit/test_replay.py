"""What-if replay without a gateway: decisions under the repository's own template and routes,
the comparison, the AddHeader fields taken off a stored copy, and the local history."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mxgate.local.facts import message_facts
from mxgate.local.history import History
from mxgate.local.spool import Spool
from mxgate.mailmanager.addresses import StaticAddressBook
from mxgate.mailmanager.resources import load_mail_manager
from mxgate.message.parse import parse_message
from mxgate.message.raw import RawMessage
from mxgate.records import Envelope
from mxgate.replay.decisions import (
    REFUSED,
    Comparison,
    Configuration,
    Known,
    StoredMessage,
    decide,
)
from mxgate.replay.received import added_fields, as_received
from mxgate.routing.quarantine import facts_of
from tests.support import TEMPLATE, shipped_routes

RECEIVED = datetime(2026, 11, 28, 8, 30, tzinfo=UTC)


def side() -> Configuration:
    return Configuration(
        "template.yaml",
        load_mail_manager(TEMPLATE, {"SubmissionIngress": "true"}),
        shipped_routes(),
    )


def stored(raw: bytes, *recipients: str) -> Known:
    envelope = Envelope(
        message_id="01TEST",
        mail_from="buyer@shop.example",
        recipients=list(recipients),
        helo="mx.shop.example",
        source_ip="198.51.100.7",
        tls_protocol="TLS1_3",
        received_at=RECEIVED.isoformat(),
        ingress_point="IngressPoint",
    )
    message = StoredMessage(envelope, raw, RECEIVED)
    facts = message_facts(envelope, RawMessage.of(raw))
    return Known(message, facts, facts_of(parse_message(raw)))


PLAIN = b"From: buyer@shop.example\r\nSubject: Quote\r\n\r\nHello.\r\n"


def test_each_recipient_ends_where_the_gateway_would_put_it() -> None:
    known = stored(
        PLAIN,
        "alice@nutrition.co",
        "carol@nutrition.co",
        "orders@customer-support.nutrition.co",
        "nobody@customer-support.nutrition.co",
        "someone@elsewhere.example",
    )
    found = {d.recipient: d for d in decide(side(), known, StaticAddressBook())}
    assert {r: (d.outcome, d.route) for r, d in found.items()} == {
        "alice@nutrition.co": ("delivered", "mailbox:workspace"),
        "carol@nutrition.co": ("delivered", "mailbox:m365"),
        "orders@customer-support.nutrition.co": ("handed_to_app", "app:orders"),
        # no app owns it, so the directory's address list does not hold it
        "nobody@customer-support.nutrition.co": (REFUSED, "DefaultAction (DENY)"),
        "someone@elsewhere.example": (REFUSED, "DefaultAction (DENY)"),
    }
    assert found["alice@nutrition.co"].rules == ("archive", "store")


def test_each_side_checks_rcpt_against_its_own_routes_directory() -> None:
    base = side()
    known = stored(PLAIN, "erin@nutrition.co")
    (before,) = decide(base, known, StaticAddressBook())
    users = {**base.routes.directory.users, "erin@nutrition.co": "workspace"}
    moved = base.routes.model_copy(
        update={"directory": base.routes.directory.model_copy(update={"users": users})}
    )
    (after,) = decide(Configuration("new", base.mail_manager, moved), known, StaticAddressBook())
    assert (before.outcome, after.outcome, after.route) == (
        REFUSED,
        "delivered",
        "mailbox:workspace",
    )


def test_a_loop_header_anyone_can_write_drops_nothing_in_the_rule_set() -> None:
    """Loops are judged in Process, by tokens only this deployment can sign (routing/loops.py):
    the rule set lets a message that merely carries the header through."""
    looped = b"X-Mxgate-Loop: mxgate\r\n" + PLAIN
    (decision,) = decide(side(), stored(looped, "bob@nutrition.co"), StaticAddressBook())
    assert (decision.outcome, decision.route) == ("delivered", "mailbox:workspace")


def test_only_differences_are_changes() -> None:
    base = side()
    known = stored(PLAIN, "alice@nutrition.co", "carol@nutrition.co")
    same = decide(base, known, StaticAddressBook())
    comparison = Comparison()
    comparison.add(known.message, same, same)
    assert (comparison.messages, comparison.recipients, comparison.changes) == (1, 2, [])
    moved = base.routes.model_copy(
        update={
            "directory": base.routes.directory.model_copy(
                update={"users": {**base.routes.directory.users, "carol@nutrition.co": "workspace"}}
            )
        }
    )
    other = decide(Configuration("new", base.mail_manager, moved), known, StaticAddressBook())
    comparison.add(known.message, same, other)
    (change,) = comparison.changes
    assert change.recipient == "carol@nutrition.co"
    assert change.old is not None
    assert change.new is not None
    assert (change.old.route, change.new.route) == ("mailbox:m365", "mailbox:workspace")
    assert change.differing_rules() == []  # the routes changed, not the rules


def test_the_fields_the_rule_set_added_come_off_a_stored_copy() -> None:
    # the shipped rule set adds none (the loop guard signs its tokens in Process)
    assert added_fields(side().mail_manager.rule_sets["RuleSet"]) == []
    added = [("X-Mxgate-Loop", "mxgate")]  # a rule set with an AddHeader action
    copy = b"X-Mxgate-Loop: mxgate\r\nX-Mxgate-Loop: mxgate\r\n" + PLAIN
    assert as_received(copy, added) == b"X-Mxgate-Loop: mxgate\r\n" + PLAIN  # a real loop stays
    assert as_received(b"X-Mxgate-Loop: mxgate\n" + PLAIN.replace(b"\r\n", b"\n"), added) == (
        PLAIN.replace(b"\r\n", b"\n")
    )
    assert as_received(PLAIN, added) == PLAIN
    assert as_received(b"no header section", added) == b"no header section"


def test_the_history_keeps_links_of_spooled_messages_and_forgets_old_days(tmp_path: Path) -> None:
    history = History(tmp_path / "history", keep_seconds=2 * 86400)
    spool = Spool(tmp_path / "spool", history.keep)
    envelope = stored(PLAIN, "alice@nutrition.co").message.envelope
    path = spool.write(envelope, PLAIN)
    kept = history.directory / "2026-11-28" / path.name
    assert os.stat(kept).st_ino == os.stat(path).st_ino  # a link: no copy
    spool.remove(path)  # the message is done: the history still has it
    (found,) = history.messages(RECEIVED - timedelta(hours=1))
    message = history.read(found)
    assert (message.envelope, message.raw, message.received_at) == (envelope, PLAIN, RECEIVED)
    assert history.messages(RECEIVED + timedelta(days=1)) == []
    later = envelope.model_copy(
        update={"message_id": "01LATER", "received_at": RECEIVED + timedelta(days=3)}
    )
    spool.write(later, PLAIN)  # a new day begins: nothing is removed on a message's way
    assert sorted(d.name for d in history.directory.iterdir()) == ["2026-11-28", "2026-12-01"]
    assert history.prune(RECEIVED + timedelta(days=3)) == 1  # the housekeeping's: days past two
    assert sorted(d.name for d in history.directory.iterdir()) == ["2026-12-01"]
