"""`mxgate quarantine`: the messages the gateway held, why, and releasing or deleting them, on
this machine or (--aws) in the deployed stack."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mxgate.cli import COMMANDS
from mxgate.cli.common import (
    add_desk_arguments,
    cut,
    desk_of,
    moment_argument,
    print_json,
    resolved,
    table,
)
from mxgate.desk import delete_message, release_message
from mxgate.errors import PermanentError
from mxgate.message.parse import parse_message
from mxgate.records import QuarantineRecord
from mxgate.workflow.quarantine import find, purge

AWS_NAMES = ["state_table", "defer_queue"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "quarantine",
        help=COMMANDS["quarantine"].help,
        description="Messages the gateway held: a quarantine rule of the routes file matched "
        "(an executable attachment, a DMARC reject), no route took a recipient, or the message "
        "could not be understood. `release` sends a message on to its delivery through the "
        "normal steps, once; `delete` forgets it. Quarantined mail is kept RawMailRetentionDays "
        "(the template's parameter); `purge` enforces that here (on AWS the state table's TTL "
        "and the raw bucket's expiry do).",
    )
    actions = parser.add_subparsers(dest="quarantine_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="quarantined messages, newest first")
    listing.add_argument("--reason", help="only those whose rule or reason contains this text")
    listing.add_argument(
        "--since",
        type=moment_argument,
        help="a time, or a duration back (1h, 7d)",
    )
    listing.set_defaults(handler=list_quarantine)
    show = actions.add_parser("show", help="why a message was held, its verdicts and its content")
    show.add_argument("quarantine_id", metavar="ID", help="its id (or a unique prefix)")
    show.add_argument("--raw", action="store_true", help="print the message as received")
    show.set_defaults(handler=show_quarantined)
    again = actions.add_parser("release", help="deliver a quarantined message (once)")
    again.add_argument("quarantine_id", metavar="ID")
    again.add_argument(
        "--to", dest="recipient", metavar="RECIPIENT", help="deliver to this address instead"
    )
    again.set_defaults(handler=release_quarantined)
    gone = actions.add_parser("delete", help="forget a quarantined message and its content")
    gone.add_argument("quarantine_id", metavar="ID")
    gone.set_defaults(handler=delete_quarantined)
    purge = actions.add_parser("purge", help="delete what is past the quarantine's retention")
    purge.add_argument("--dry-run", action="store_true", help="only list what would go")
    purge.set_defaults(handler=purge_quarantine)
    for sub in (listing, show, again, gone, purge):
        sub.add_argument("--json", action="store_true", help="print JSON")
        add_desk_arguments(sub, AWS_NAMES)


def record_json(record: QuarantineRecord) -> dict[str, Any]:
    return {
        **record.model_dump(mode="json", by_alias=True),
        "reason": record.reason,
        "held": [h.recipient for h in record.held],
    }


def list_quarantine(args: argparse.Namespace) -> int:
    desk = desk_of(args)
    since = resolved(args.since, desk.clock)
    records = [
        r
        for r in desk.quarantine.records()
        if (since is None or r.held_at >= since)
        and (not args.reason or args.reason.casefold() in r.reason.casefold())
    ]
    if args.json:
        print_json({"quarantined": [record_json(r) for r in records]})
        return 0
    if not records:
        print(f"nothing quarantined in {desk.where}")
        return 0
    print(
        table(
            [
                [
                    r.quarantine_id,
                    r.held_at.isoformat(timespec="seconds")[:19],
                    cut(r.from_ or r.message.envelope_sender, 28),
                    cut(r.message.subject, 30),
                    ", ".join(h.recipient for h in r.held) or "(released)",
                    cut(r.reason, 50),
                ]
                for r in records
            ],
            ["ID", "HELD (UTC)", "FROM", "SUBJECT", "HELD FOR", "REASON"],
        )
    )
    return 0


def show_quarantined(args: argparse.Namespace) -> int:
    desk = desk_of(args)
    record = find(desk.quarantine, args.quarantine_id)
    raw = desk.objects.get(record.message.bucket, record.message.key)
    if args.raw:
        sys.stdout.buffer.write(raw)
        return 0
    parsed = parse_message(raw)
    if args.json:
        print_json(
            {
                **record_json(record),
                "parsed": parsed.model_dump(
                    mode="json",
                    by_alias=True,
                    include={"subject", "from_", "to", "cc", "text", "attachments", "defects"},
                ),
                "raw": f"{record.message.bucket}/{record.message.key}",
            }
        )
        return 0
    print(f"quarantined message {record.quarantine_id}")
    for label, value in (
        ("held", record.held_at.isoformat(timespec="seconds")),
        (
            "kept until",
            record.expires_at.isoformat(timespec="seconds") if record.expires_at else "-",
        ),
        ("from", record.from_),
        ("to", record.to),
        ("subject", record.message.subject or parsed.subject),
        ("envelope from", record.message.envelope_sender),
        ("verdicts", record.verdicts or "(not checked)"),
        ("raw file", f"{record.message.bucket}/{record.message.key} ({record.message.size} bytes)"),
    ):
        print(f"  {label + ':':<15}{value}")
    print("why:")
    for held in record.recipients:
        state = (
            f"released {held.released_at.isoformat(timespec='seconds')} by {held.released_by}"
            if held.released_at
            else "held"
        )
        print(f"  {held.recipient}: {held.rule}: {held.reason} [{state}]")
    for extra in record.released_to:
        print(
            f"  released to {extra.recipient} {extra.released_at.isoformat(timespec='seconds')} by {extra.released_by}"
        )
    if parsed.attachments:
        print("attachments:")
        for attachment in parsed.attachments:
            print(
                f"  {attachment.filename or '(unnamed)'}  {attachment.content_type}  {attachment.size} bytes"
            )
    print("text:")
    for line in (parsed.text or "(no text body)").splitlines()[:40]:
        print(f"  | {line}")
    print(f"release with: mxgate quarantine release {record.quarantine_id}")
    return 0


def release_quarantined(args: argparse.Namespace) -> int:
    desk = desk_of(args)
    report = release_message(desk, args.quarantine_id, args.recipient)
    if args.json:
        print_json(report)
        return 0
    if not report["released"]:
        print(f"nothing to release: {report['id']} was released already")
        return 0
    print(f"released {report['id']}: {', '.join(report['released'])} queued for delivery")
    print(desk.after_queue)
    return 0


def delete_quarantined(args: argparse.Namespace) -> int:
    desk = desk_of(args)
    record = delete_message(desk, args.quarantine_id)
    if args.json:
        print_json({"deleted": record.quarantine_id, "by": desk.actor})
    else:
        print(f"deleted {record.quarantine_id} from the quarantine")
    return 0


def purge_quarantine(args: argparse.Namespace) -> int:
    desk = desk_of(args)
    if desk.aws:
        raise PermanentError(
            "on AWS the quarantine purges itself: records expire with the state table's TTL, "
            "messages with the raw bucket's lifecycle rule"
        )
    gone = purge(
        desk.quarantine, desk.timeline, desk.clock, desk.delete_object, dry_run=args.dry_run
    )
    if args.json:
        print_json({"dry_run": args.dry_run, "purged": [r.quarantine_id for r in gone]})
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for record in gone:
        print(
            f"  {verb} {record.quarantine_id} (held {record.held_at.isoformat(timespec='seconds')})"
        )
    print(f"{verb} {len(gone)} quarantined message(s)")
    return 0
