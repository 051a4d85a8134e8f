"""`mxgate archive`: search, read, export and purge the archive, on this machine (the SQLite
index beside the archived copies) or, with --aws, in Mail Manager's own archive."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mxgate.adapters.local.archive import SqliteArchive
from mxgate.archive.index import Archive
from mxgate.archive.query import (
    MAX_SEARCH_RESULTS,
    QUERY_FORMS,
    ArchivedMessage,
    ArchiveQuery,
    query_terms,
    retention_cutoff,
)
from mxgate.cli import COMMANDS
from mxgate.cli.common import (
    add_aws_arguments,
    add_settings_arguments,
    cut,
    moment_argument,
    print_json,
    settings_from,
    table,
)
from mxgate.cli.export import ExportDirectory, ProgressBar
from mxgate.errors import ConfigError
from mxgate.local.bootstrap import Bootstrap
from mxgate.local.setup import archive_retentions, load_mail_manager_config
from mxgate.message.parse import parse_message
from mxgate.moment import moment

AWS_NAMES = ["archive_id", "raw_bucket"]
EXPORT_PREFIX = "exports/"  # where an export job writes in the raw-mail bucket, by default


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "archive",
        help=COMMANDS["archive"].help,
        description="What the rule set's Archive action stored. Searches have Mail Manager's "
        "meaning: each filter is a case-insensitive substring (CONTAINS), every filter given "
        "must hold, a filter repeated is an alternative, at most 1,000 results. "
        "With --aws, Mail Manager's own archive answers (its archive API).",
    )
    actions = parser.add_subparsers(dest="archive_command", metavar="ACTION", required=True)
    search = actions.add_parser("search", help="find archived messages")
    _add_query_arguments(search)
    search.add_argument(
        "--limit",
        type=int,
        default=100,
        help=f"at most this many (default 100, up to {MAX_SEARCH_RESULTS})",
    )
    search.add_argument("--json", action="store_true", help="print JSON")
    search.set_defaults(handler=search_archive)

    show = actions.add_parser("show", help="one archived message: its fields, body and attachments")
    show.add_argument(
        "archived_message_id", metavar="ID", help="an id from search (or a unique prefix)"
    )
    show.add_argument(
        "--raw", action="store_true", help="print the message as archived, byte for byte"
    )
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=show_archived)

    export = actions.add_parser(
        "export", help="write matching messages to a directory (.eml files, or mbox)"
    )
    _add_query_arguments(export, to_flag="--to-address")  # --to names the directory
    export.add_argument("--to", dest="directory", type=Path, required=True, metavar="DIR")
    export.add_argument("--mbox", action="store_true", help="one mbox file (DIR/archive.mbox)")
    export.add_argument(
        "--export-location",
        help="with --aws: the s3://bucket/prefix/ the export job writes to (default: the raw "
        f"mail bucket's {EXPORT_PREFIX})",
    )
    export.add_argument("--json", action="store_true", help="print JSON")
    export.set_defaults(handler=export_archive)

    purge = actions.add_parser(
        "purge", help="delete archived messages past the archive's Retention"
    )
    purge.add_argument("--dry-run", action="store_true", help="only list what would go")
    purge.add_argument("--json", action="store_true", help="print JSON")
    purge.set_defaults(handler=purge_archive)

    for sub in (search, show, export, purge):
        add_settings_arguments(sub)
        if sub is not purge:
            add_aws_arguments(sub, AWS_NAMES)


def _add_query_arguments(parser: argparse.ArgumentParser, to_flag: str = "--to") -> None:
    parser.add_argument("query", nargs="?", default="", metavar="QUERY", help=QUERY_FORMS)
    filters = parser.add_argument_group("filters (CONTAINS, case-insensitive; repeat for OR)")
    filters.add_argument("--from", dest="from_", action="append", default=[], metavar="TEXT")
    filters.add_argument(to_flag, dest="to", action="append", default=[], metavar="TEXT")
    filters.add_argument("--cc", action="append", default=[], metavar="TEXT")
    filters.add_argument("--subject", action="append", default=[], metavar="TEXT")
    filters.add_argument("--envelope-from", action="append", default=[], metavar="TEXT")
    filters.add_argument("--envelope-to", action="append", default=[], metavar="TEXT")
    filters.add_argument(
        "--has-attachments",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="only messages with (--no-has-attachments: without) attachments",
    )
    filters.add_argument(
        "--since", type=moment_argument, help="a time, or a duration back (1h, 7d)"
    )
    filters.add_argument("--until", type=moment_argument, help="a time, or a duration back")


def query_of(args: argparse.Namespace, *, limit: int = 100) -> ArchiveQuery:
    """The query the arguments and QUERY say; durations back count from the command's clock."""
    try:
        terms = query_terms(args.query or "")
        now = args.clock.now()
        for name in ("since", "until"):
            if isinstance(terms.get(name), str):
                terms[name] = moment(terms[name], now)
        fields: dict[str, Any] = {"limit": limit}
        for name in ("from_", "to", "cc", "subject", "envelope_from", "envelope_to"):
            fields[name] = [*terms.get(name, []), *getattr(args, name)]
        for name in ("since", "until"):
            given = getattr(args, name)
            fields[name] = given.resolve(now) if given is not None else terms.get(name)
        attachments = args.has_attachments
        fields["has_attachments"] = (
            attachments if attachments is not None else terms.get("has_attachments")
        )
        return ArchiveQuery.model_validate(fields)
    except (ValueError, ValidationError) as error:
        raise ConfigError(f"archive query: {error}") from None


@dataclass
class ArchiveAccess:
    archive: Archive
    where: str
    local: SqliteArchive | None = None
    operator: Any = None  # on AWS: the OperatorAws

    def resolve(self, given: str) -> str:
        """A full id from a unique prefix (on this machine; Mail Manager's ids are whole)."""
        if self.local is None:
            return given
        found = self.local.find(given)
        if given in found:
            return given
        if not found:
            raise ConfigError(f"no archived message {given!r} in {self.where}")
        if len(found) > 1:
            raise ConfigError(f"{given!r} is ambiguous: {', '.join(found)}")
        return found[0]


def open_archive(args: argparse.Namespace) -> ArchiveAccess:
    if getattr(args, "aws", False):
        from mxgate.adapters.aws.bootstrap import aws_archive  # noqa: PLC0415 -- boto3
        from mxgate.adapters.aws.operator import operator_aws  # noqa: PLC0415

        operator = operator_aws(args)
        archive_id = operator.names.need("archive_id")
        return ArchiveAccess(
            aws_archive(operator), f"Mail Manager archive {archive_id}", operator=operator
        )
    bootstrap = Bootstrap(settings_from(args), clock=args.clock)
    local = bootstrap.archive()
    return ArchiveAccess(local, str(bootstrap.paths.archive_db), local=local)


def _row(message: ArchivedMessage) -> dict[str, Any]:
    return message.model_dump(mode="json", by_alias=True)


def search_archive(args: argparse.Namespace) -> int:
    query = query_of(args, limit=args.limit)
    access = open_archive(args)
    found = access.archive.search(query)
    if args.json:
        print_json(
            {"query": query.describe(), "count": len(found), "messages": [_row(m) for m in found]}
        )
        return 0
    if not found:
        print(f"no archived message matches {query.describe()} ({access.where})")
        return 0
    print(
        table(
            [
                [
                    m.archived_message_id,
                    m.received_at.isoformat(timespec="seconds")[:19],
                    cut(m.from_, 30),
                    cut(m.to, 30),
                    cut(m.subject, 40),
                    "yes" if m.has_attachments else "",
                ]
                for m in found
            ],
            ["ID", "ARCHIVED (UTC)", "FROM", "TO", "SUBJECT", "ATTACHMENTS"],
        )
    )
    more = " (the limit: --limit raises it)" if len(found) == query.limit else ""
    print(f"{len(found)} message(s){more}")
    return 0


def show_archived(args: argparse.Namespace) -> int:
    access = open_archive(args)
    archived_id = access.resolve(args.archived_message_id)
    message = access.archive.get(archived_id)
    if message is None:
        raise ConfigError(f"no archived message {archived_id!r} in {access.where}")
    raw = access.archive.raw(archived_id)
    if args.raw:
        sys.stdout.buffer.write(raw)
        return 0
    parsed = parse_message(raw)
    if args.json:
        print_json(
            {
                **_row(message),
                "text": parsed.text,
                "html": parsed.html,
                "attachments": [
                    a.model_dump(
                        mode="json", include={"filename", "content_type", "size", "sha256"}
                    )
                    for a in parsed.attachments
                ],
            }
        )
        return 0
    print(f"archived message {message.archived_message_id} (archive {message.archive_id})")
    for label, value in (
        ("archived", message.received_at.isoformat(timespec="seconds")),
        ("from", message.from_),
        ("to", message.to),
        ("cc", message.cc),
        ("subject", message.subject),
        ("date", message.date),
        ("message-id", message.message_id),
        ("envelope from", message.envelope_from),
        ("envelope to", ", ".join(message.envelope_to)),
        ("ingress point", message.ingress_point),
        ("sender", f"{message.sender_ip} (HELO {message.helo})" if message.sender_ip else ""),
        ("size", f"{len(raw)} bytes"),
    ):
        if value:
            print(f"  {label + ':':<15}{value}")
    if parsed.attachments:
        print("attachments:")
        for attachment in parsed.attachments:
            print(
                f"  {attachment.filename or '(unnamed)'}  {attachment.content_type}  {attachment.size} bytes"
            )
    print("text:")
    for line in (parsed.text or "(no text body)").splitlines() or [""]:
        print(f"  | {line}")
    return 0


def export_archive(args: argparse.Namespace) -> int:
    query = query_of(args, limit=MAX_SEARCH_RESULTS)
    access = open_archive(args)
    directory = ExportDirectory(args.directory, mbox=args.mbox)
    if access.local is not None:
        matches = list(access.local.matching(query))
        progress = ProgressBar(len(matches), "messages exported")
        for message in matches:
            directory.add(
                message.archived_message_id,
                access.local.raw(message.archived_message_id),
                envelope_from=message.envelope_from,
                received_at=message.received_at,
            )
            progress.step()
        progress.finish()
    else:
        _export_from_aws(access, query, directory, args)
    written = [str(p) for p in directory.written]
    if args.json:
        print_json({"query": query.describe(), "directory": str(args.directory), "files": written})
    else:
        what = "messages" if not args.mbox else "messages into one mbox file"
        count = len(written) if not args.mbox else directory.count
        print(f"exported {count} {what} to {args.directory} ({query.describe()})")
    return 0


def _export_from_aws(
    access: ArchiveAccess, query: ArchiveQuery, directory: ExportDirectory, args: argparse.Namespace
) -> None:
    from mxgate.adapters.aws.archive import MailManagerArchive  # noqa: PLC0415 -- boto3

    assert isinstance(access.archive, MailManagerArchive)
    operator = access.operator
    location = args.export_location
    if location:
        if not location.startswith("s3://"):
            raise ConfigError(f"--export-location {location!r}: write s3://bucket/prefix/")
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        prefix = prefix.rstrip("/") + "/" if prefix else ""
    else:  # each export in its own folder, so only its files are downloaded
        bucket = operator.names.need("raw_bucket")
        prefix = f"{EXPORT_PREFIX}{args.clock.now().strftime('%Y%m%dT%H%M%SZ')}/"
    progress = ProgressBar(None, "messages exported")
    messages = access.archive.export(
        query,
        operator.client("s3"),
        (bucket, prefix),
        on_state=lambda state: progress.status(f"export job {state.lower()}"),
    )
    for name, raw in messages:
        directory.add(name, raw, envelope_from="", received_at=args.clock.now())
        progress.step()
    progress.finish()


def purge_archive(args: argparse.Namespace) -> int:
    bootstrap = Bootstrap(settings_from(args), clock=args.clock)
    _, mail_manager = load_mail_manager_config(bootstrap.settings)
    local = bootstrap.archive()
    now = bootstrap.clock.now()
    retentions = archive_retentions(mail_manager)
    purged = local.purge(retentions, now, dry_run=args.dry_run)
    if args.json:
        print_json(
            {
                "dry_run": args.dry_run,
                "retention": retentions,
                "messages": [_row(m) for m in purged],
            }
        )
        return 0
    for archive, period in retentions.items():
        cutoff = retention_cutoff(period, now)
        print(
            f"archive {archive}: retention {period}"
            + (f", cut-off {cutoff.isoformat(timespec='seconds')}" if cutoff else " (kept forever)")
        )
    verb = "would delete" if args.dry_run else "deleted"
    for message in purged:
        print(
            f"  {verb} {message.archived_message_id}  "
            f"{message.received_at.isoformat(timespec='seconds')[:19]}  {message.subject}"
        )
    print(f"{verb} {len(purged)} archived message(s)")
    return 0
