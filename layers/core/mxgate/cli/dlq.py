"""`mxgate dlq`: the dead letters, on this machine (SQLite) or on AWS (DynamoDB and SQS)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

from mxgate.adapters.local.state import SqliteState
from mxgate.cli.common import (
    add_settings_arguments,
    cut,
    print_json,
    settings_from,
    table,
)
from mxgate.clock import SystemClock
from mxgate.desk import Desk
from mxgate.errors import ConfigError, MxgateError
from mxgate.local.mailmanager import DEAD_LETTER_KIND, redrive_rule_set
from mxgate.local.runtime import state_paths
from mxgate.ports import DeadLetters, Deferrals, Timeline
from mxgate.workflow.delivery import redrive


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "dlq",
        help="list, show and redrive dead letters",
        description="Dead letters are deliveries that could not be completed (a permanent "
        "refusal, a policy, or a deferred delivery that expired without a DSN), and, on this "
        "machine, recipients whose rule actions failed (kind `rules`). `redrive` puts one back "
        "in the deferred queue, due now, for the running gateway (or, with --aws, the "
        "Redeliver function) to deliver, or to take through the rule set again; recipients "
        "already delivered are never sent twice.",
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
        add_settings_arguments(sub)
        aws = sub.add_argument_group("on AWS")
        aws.add_argument("--aws", action="store_true", help="the deployed stack's dead letters")
        aws.add_argument("--table", help="state table (env MXGATE_STATE_TABLE)")
        aws.add_argument("--defer-queue", help="deferred queue URL (env MXGATE_DEFER_QUEUE)")
        aws.add_argument(
            "--dead-letter-queue", help="dead-letter queue URL (env MXGATE_DEAD_LETTER_QUEUE)"
        )
        aws.add_argument("--region", help="AWS region (default: the AWS configuration's)")


@dataclass
class Store:
    dead_letters: DeadLetters
    deferrals: Deferrals
    timeline: Timeline
    where: str
    after_redrive: str
    forget_notices: Any = None  # on AWS: removes the redriven records' SQS notices


def _option(args: argparse.Namespace, name: str, variable: str) -> str:
    value = getattr(args, name, None) or os.environ.get(variable)
    if not value:
        flag = "--" + name.replace("_", "-")
        raise ConfigError(f"--aws needs {flag} or {variable}")
    return str(value)


def open_store(args: argparse.Namespace) -> Store:
    if args.aws:
        return _aws_store(args)
    settings = settings_from(args)
    paths = state_paths(settings)
    state = SqliteState(paths.state_db)
    running = paths.ports_file.exists()
    return Store(
        dead_letters=state,
        deferrals=state,
        timeline=state,
        where=str(paths.state_db),
        after_redrive=(
            f"the running gateway delivers it within {settings.defer_poll:g}s"
            if running
            else "the gateway delivers it when it next runs (`mxgate run`)"
        ),
    )


def _aws_store(args: argparse.Namespace) -> Store:
    import boto3  # noqa: PLC0415 -- only with --aws

    from mxgate.adapters.aws.deferral import SqsDeferrals  # noqa: PLC0415
    from mxgate.adapters.aws.dynamodb import DynamoState  # noqa: PLC0415
    from mxgate.adapters.aws.events import forget_notices  # noqa: PLC0415

    session = boto3.session.Session(region_name=args.region)
    clock = SystemClock()
    table = _option(args, "table", "MXGATE_STATE_TABLE")
    state = DynamoState(session.client("dynamodb"), table, clock)
    deferrals = SqsDeferrals(
        session.client("sqs"), _option(args, "defer_queue", "MXGATE_DEFER_QUEUE"), clock
    )
    notices = getattr(args, "dead_letter_queue", None) or os.environ.get("MXGATE_DEAD_LETTER_QUEUE")
    sqs = session.client("sqs")
    return Store(
        dead_letters=state,
        deferrals=deferrals,
        timeline=state,
        where=f"DynamoDB table {table}",
        after_redrive="the Redeliver function starts its redelivery within seconds",
        forget_notices=(lambda ids: forget_notices(sqs, notices, ids)) if notices else None,
    )


def _recipients(record: dict[str, object]) -> list[str]:
    found = record.get("recipients")
    return [str(r) for r in found] if isinstance(found, list) else []


def list_dead_letters(args: argparse.Namespace) -> int:
    store = open_store(args)
    rows = [{"id": record_id, **record} for record_id, record in store.dead_letters.list()]
    rows.sort(key=lambda r: str(r.get("at", "")))
    if args.json:
        print_json({"dead_letters": rows})
        return 0
    if not rows:
        print(f"no dead letters in {store.where}")
        return 0
    print(
        table(
            [
                [
                    str(r["id"]),
                    str(r.get("at", ""))[:19],
                    f"{r.get('kind', '')} {r.get('destination', '')}".strip(),
                    str(len(_recipients(r))),
                    cut(r.get("reason") or r.get("error"), 60),
                ]
                for r in rows
            ],
            ["ID", "AT (UTC)", "DELIVERY", "RCPTS", "REASON"],
        )
    )
    return 0


def show_dead_letter(args: argparse.Namespace) -> int:
    store = open_store(args)
    record = store.dead_letters.get(args.record_id)
    if record is None:
        raise ConfigError(f"no dead letter {args.record_id!r} in {store.where}")
    if args.json:
        print_json({"id": args.record_id, **record})
        return 0
    rules = record.get("kind") == DEAD_LETTER_KIND
    if rules:  # rule actions failed: the message is kept beside the record
        message = record.get("message")
    else:
        delivery = record.get("delivery")
        message = delivery.get("message", {}) if isinstance(delivery, dict) else {}
    if not isinstance(message, dict):
        message = {}
    print(f"dead letter {args.record_id}")
    for label, value in (
        ("message", record.get("message_id")),
        ("subject", message.get("subject")),
        ("envelope sender", message.get("envelope_sender")),
        ("stored at", f"{message.get('bucket')}/{message.get('key')}"),
        (
            "delivery",
            f"rule actions of rule set {record.get('destination')}"
            if rules
            else f"{record.get('kind')} to {record.get('destination')}",
        ),
        ("recipients", ", ".join(_recipients(record))),
        ("dead-lettered", record.get("at")),
        ("error", record.get("error")),
        ("reason", record.get("reason") or record.get("cause")),
    ):
        print(f"  {label + ':':<17}{value}")
    failures = record.get("failures")
    if rules and isinstance(failures, dict):
        print("  failed actions:")
        for recipient, reasons in failures.items():
            for reason in reasons if isinstance(reasons, list) else [reasons]:
                print(f"    {recipient}: {reason}")
    print(f"redrive with: mxgate dlq redrive {args.record_id}")
    return 0


def redrive_one(store: Store | Desk, record_id: str, *, aws: bool) -> dict[str, object]:
    """A delivery goes back to the deferred queue; a rule set dead letter goes back through the
    rule set (on this machine only: on AWS, Mail Manager runs the rules)."""
    record = store.dead_letters.get(record_id)
    clock = SystemClock()
    if record is not None and record.get("kind") == DEAD_LETTER_KIND:
        if aws:
            raise ConfigError(
                f"{record_id} is a local rule set dead letter; redrive it without --aws"
            )
        retry = redrive_rule_set(
            record_id,
            record,
            dead_letters=store.dead_letters,
            deferrals=store.deferrals,
            timeline=store.timeline,
            clock=clock,
        )
        return {
            "id": record_id,
            "queued_as": retry.record_id,
            "recipients": retry.recipients,
            "message_id": retry.envelope.message_id,
        }
    queued = redrive(
        record_id,
        dead_letters=store.dead_letters,
        deferrals=store.deferrals,
        timeline=store.timeline,
        clock=clock,
    )
    return {
        "id": record_id,
        "queued_as": queued.record_id,
        "recipients": queued.delivery.recipients,
        "message_id": queued.delivery.message.message_id,
    }


def redrive_dead_letters(args: argparse.Namespace) -> int:
    store = open_store(args)
    ids = [record_id for record_id, _ in store.dead_letters.list()] if args.all else args.record_ids
    done: list[dict[str, object]] = []
    failed: list[dict[str, str]] = []
    for record_id in ids:
        try:
            done.append(redrive_one(store, record_id, aws=args.aws))
        except MxgateError as error:
            failed.append({"id": record_id, "error": str(error)})
    if done and store.forget_notices is not None:
        store.forget_notices({str(d["id"]) for d in done})
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
            print(store.after_redrive)
        elif not ids:
            print(f"no dead letters in {store.where}")
    return 1 if failed else 0
