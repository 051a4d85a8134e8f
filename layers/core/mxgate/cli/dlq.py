"""`mxgate dlq`: the dead letters, on this machine (SQLite) or on AWS (DynamoDB and SQS)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mxgate.cli.common import add_settings_arguments, print_json, settings_from, table
from mxgate.errors import ConfigError, MxgateError
from mxgate.local.bootstrap import Bootstrap
from mxgate.local.rule_set_failures import redrive_rule_set
from mxgate.ports import Clock, DeadLetters, Deferrals, Timeline
from mxgate.records import DeadLetter, RuleSetDeadLetter
from mxgate.workflow.dead_letter import redrive


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
    clock: Clock
    where: str
    after_redrive: str
    forget_notices: Callable[[set[str]], int] | None = None  # on AWS: the redriven's notices


def _option(args: argparse.Namespace, name: str, variable: str) -> str:
    value = getattr(args, name, None) or os.environ.get(variable)
    if not value:
        flag = "--" + name.replace("_", "-")
        raise ConfigError(f"--aws needs {flag} or {variable}")
    return str(value)


def open_store(args: argparse.Namespace) -> Store:
    if args.aws:
        return _aws_store(args)
    bootstrap = Bootstrap(settings_from(args))
    paths = bootstrap.paths
    if not paths.state_db.exists():
        raise ConfigError(
            f"no gateway state under {bootstrap.settings.home} (has `mxgate run` run?)"
        )
    state = bootstrap.state()
    running = paths.ports_file.exists()
    return Store(
        dead_letters=state,
        deferrals=state,
        timeline=state,
        clock=bootstrap.clock,
        where=str(paths.state_db),
        after_redrive=(
            f"the running gateway delivers it within {bootstrap.settings.defer_poll:g}s"
            if running
            else "the gateway delivers it when it next runs (`mxgate run`)"
        ),
    )


def _aws_store(args: argparse.Namespace) -> Store:
    from mxgate.adapters.aws.bootstrap import dead_letter_store  # noqa: PLC0415 -- only with --aws

    table = _option(args, "table", "MXGATE_STATE_TABLE")
    aws = dead_letter_store(
        table=table,
        defer_queue=_option(args, "defer_queue", "MXGATE_DEFER_QUEUE"),
        dead_letter_queue=getattr(args, "dead_letter_queue", None)
        or os.environ.get("MXGATE_DEAD_LETTER_QUEUE"),
        region=args.region,
    )
    return Store(
        dead_letters=aws.state,
        deferrals=aws.deferrals,
        timeline=aws.state,
        clock=aws.clock,
        where=f"DynamoDB table {table}",
        after_redrive="the Redeliver function starts its redelivery within seconds",
        forget_notices=aws.forget_notices,
    )


def _as_json(record: DeadLetter) -> dict[str, Any]:
    return {"id": record.record_id, **record.model_dump(mode="json", exclude={"record_id"})}


def _text(value: object, width: int) -> str:
    text = " ".join(str(value or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def list_dead_letters(args: argparse.Namespace) -> int:
    store = open_store(args)
    rows = sorted(store.dead_letters.list(), key=lambda r: r.at)
    if args.json:
        print_json({"dead_letters": [_as_json(r) for r in rows]})
        return 0
    if not rows:
        print(f"no dead letters in {store.where}")
        return 0
    print(
        table(
            [
                [
                    r.record_id,
                    r.at.strftime("%Y-%m-%dT%H:%M:%S"),
                    r.label,
                    str(len(r.recipients)),
                    _text(r.reason or r.error, 60),
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


def _redrive_one(store: Store, record_id: str, args: argparse.Namespace) -> dict[str, object]:
    """A delivery goes back to the deferred queue; a rule set dead letter goes back through the
    rule set (on this machine only: on AWS, Mail Manager runs the rules)."""
    record = store.dead_letters.get(record_id)
    if isinstance(record, RuleSetDeadLetter):
        if args.aws:
            raise ConfigError(
                f"{record_id} is a local rule set dead letter; redrive it without --aws"
            )
        retry = redrive_rule_set(
            record,
            dead_letters=store.dead_letters,
            deferrals=store.deferrals,
            timeline=store.timeline,
            clock=store.clock,
        )
        return {
            "id": record_id,
            "queued_as": retry.record_id,
            "recipients": retry.recipients,
            "message_id": retry.message_id,
        }
    queued = redrive(
        record_id,
        dead_letters=store.dead_letters,
        deferrals=store.deferrals,
        timeline=store.timeline,
        clock=store.clock,
    )
    return {
        "id": record_id,
        "queued_as": queued.record_id,
        "recipients": queued.recipients,
        "message_id": queued.message_id,
    }


def redrive_dead_letters(args: argparse.Namespace) -> int:
    store = open_store(args)
    ids = [r.record_id for r in store.dead_letters.list()] if args.all else args.record_ids
    done: list[dict[str, object]] = []
    failed: list[dict[str, str]] = []
    for record_id in ids:
        try:
            done.append(_redrive_one(store, record_id, args))
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
