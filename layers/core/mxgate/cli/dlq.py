"""`mxgate dlq`: the dead letters, on this machine (SQLite) or on AWS (DynamoDB and SQS)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from mxgate.cli import COMMANDS
from mxgate.cli.common import add_desk_arguments, cut, desk_of, print_json, table
from mxgate.desk import Desk, redrive_one
from mxgate.errors import ConfigError, MxgateError
from mxgate.records import DEFERRED, DeadLetter, RuleSetDeadLetter

AWS_NAMES = ["state_table", "defer_queue", "dead_letter_queue", "defer_dead_letter_queue"]
STRANDED = "deferred-queue"  # the kind of a record in the deferred queue's dead-letter queue


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "dlq",
        help=COMMANDS["dlq"].help,
        description="Dead letters are deliveries that could not be completed (a permanent "
        "refusal, a policy, or a deferred delivery that expired without a DSN), and, on this "
        "machine, recipients whose rule actions failed (kind `rules`). `redrive` puts one back "
        "in the deferred queue, due now, for the running gateway (or, with --aws, the "
        "Redeliver function) to deliver, or to take through the rule set again; recipients "
        "already delivered are never sent twice. A stored message Process could not handle "
        "(kind `processing`) goes through Process again. With --aws and the stack's "
        "DeferDeadLetterQueueUrl (--stack, or --defer-dead-letter-queue), the deferred records "
        "the Redeliver function could not start (kind `deferred-queue`) are listed and "
        "redriven too.",
    )
    actions = parser.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the dead letters, oldest first")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=list_dead_letters)
    show = actions.add_parser("show", help="one dead letter in full")
    show.add_argument("record_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=show_dead_letter)
    again = actions.add_parser("redrive", help="deliver dead letters again")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("record_ids", nargs="*", metavar="ID", default=[])
    which.add_argument("--all", action="store_true", help="every dead letter")
    again.add_argument("--json", action="store_true", help="print JSON")
    again.set_defaults(handler=redrive_dead_letters)
    for sub in (listing, show, again):
        add_desk_arguments(sub, AWS_NAMES)


def _as_json(record: DeadLetter) -> dict[str, Any]:
    return {"id": record.record_id, **record.model_dump(mode="json", exclude={"record_id"})}


@dataclass(frozen=True)
class Stranded:
    """A record of the deferred queue's own dead-letter queue (AWS): the Redeliver function
    could not start it five times, and SQS moved it there."""

    record_id: str
    document: dict[str, object]
    at: datetime
    message_id: str
    recipients: list[str]
    reason = (
        "the Redeliver function could not start it 5 times (SQS moved it to the deferred "
        "queue's dead-letter queue)"
    )

    @property
    def label(self) -> str:
        delivery = self.document.get("delivery")
        where = delivery.get("destination") if isinstance(delivery, dict) else "Process"
        return f"{STRANDED} {where}"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.record_id,
            "kind": STRANDED,
            "message_id": self.message_id,
            "recipients": self.recipients,
            "at": self.at.isoformat(),
            "reason": self.reason,
            "record": self.document,
        }


def _stranded(desk: Desk) -> list[Stranded]:
    if desk.stranded is None:
        return []
    found = []
    for record_id, document, sent in desk.stranded.list():
        try:
            record = DEFERRED.validate_python(document)
            message_id, recipients = record.message_id, list(record.recipients)
        except ValidationError:  # not a record of ours: listed, to be looked at
            message_id, recipients = "", []
        found.append(Stranded(record_id, document, sent, message_id, recipients))
    return found


def list_dead_letters(args: argparse.Namespace) -> int:
    desk = desk_of(args)
    rows = sorted([*desk.dead_letters.list(), *_stranded(desk)], key=lambda r: r.at)
    if args.json:
        print_json(
            {
                "dead_letters": [
                    r.as_json() if isinstance(r, Stranded) else _as_json(r) for r in rows
                ]
            }
        )
        return 0
    if not rows:
        print(f"no dead letters in {desk.where}")
        return 0
    print(
        table(
            [
                [
                    r.record_id,
                    r.at.strftime("%Y-%m-%dT%H:%M:%S"),
                    r.label,
                    str(len(r.recipients)),
                    cut(r.reason or ("" if isinstance(r, Stranded) else r.error), 60),
                ]
                for r in rows
            ],
            ["ID", "AT (UTC)", "DELIVERY", "RCPTS", "REASON"],
        )
    )
    return 0


def show_dead_letter(args: argparse.Namespace) -> int:
    desk = desk_of(args)
    record = desk.dead_letters.get(args.record_id)
    if record is None:
        stranded = next((r for r in _stranded(desk) if r.record_id == args.record_id), None)
        if stranded is None:
            raise ConfigError(f"no dead letter {args.record_id!r} in {desk.where}")
        if args.json:
            print_json(stranded.as_json())
            return 0
        print(f"deferred record {stranded.record_id}, never started")
        for label, value in (
            ("message", stranded.message_id),
            ("for", stranded.label.removeprefix(f"{STRANDED} ")),
            ("recipients", ", ".join(stranded.recipients)),
            ("stranded since", stranded.at.isoformat()),
            ("reason", stranded.reason),
        ):
            print(f"  {label + ':':<17}{value}")
        print(f"redrive with: mxgate dlq redrive --aws {stranded.record_id}")
        return 0
    if args.json:
        print_json(_as_json(record))
        return 0
    message = record.message
    print(f"dead letter {record.record_id}")
    for label, value in (
        ("message", record.message_id),
        ("subject", message.subject),
        ("envelope sender", message.envelope_sender),
        ("stored at", f"{message.bucket}/{message.key}"),
        ("delivery", record.what),
        ("recipients", ", ".join(record.recipients)),
        ("dead-lettered", record.at.isoformat()),
        ("error", record.error),
        ("reason", record.reason or record.cause),
    ):
        print(f"  {label + ':':<17}{value}")
    if isinstance(record, RuleSetDeadLetter):
        print("  failed actions:")
        for recipient, reasons in record.failures.items():
            for reason in reasons:
                print(f"    {recipient}: {reason}")
    print(f"redrive with: mxgate dlq redrive {record.record_id}")
    return 0


def redrive_dead_letters(args: argparse.Namespace) -> int:
    desk = desk_of(args)
    stranded = {r.record_id: r for r in _stranded(desk)}
    ids = [r.record_id for r in desk.dead_letters.list()] if args.all else args.record_ids
    if args.all:
        ids += list(stranded)
    done: list[dict[str, object]] = []
    failed: list[dict[str, str]] = []
    wanted = {i for i in ids if i in stranded and desk.dead_letters.get(i) is None}
    for record_id in ids:
        if record_id in wanted:
            continue  # moved back together below
        try:
            done.append(redrive_one(desk, record_id, aws=args.aws))
        except MxgateError as error:
            failed.append({"id": record_id, "error": str(error)})
    if wanted and desk.stranded is not None:
        moved = set(desk.stranded.redrive(wanted))
        done += [
            {
                "id": i,
                "queued_as": i,
                "recipients": stranded[i].recipients,
                "message_id": stranded[i].message_id,
            }
            for i in sorted(moved)
        ]
        failed += [
            {"id": i, "error": "no longer in the deferred queue's dead-letter queue"}
            for i in sorted(wanted - moved)
        ]
    if done and desk.forget_notices is not None:
        desk.forget_notices({str(d["id"]) for d in done})
    if args.json:
        print_json({"redriven": done, "failed": failed})
    else:
        for row in done:
            recipients = row["recipients"]
            assert isinstance(recipients, list)
            print(f"redriven {row['id']}: {len(recipients)} recipient(s) queued")
        for failure in failed:
            print(f"not redriven {failure['id']}: {failure['error']}")
        if done:
            print(desk.after_queue)
        elif not ids:
            print(f"no dead letters in {desk.where}")
    return 1 if failed else 0
