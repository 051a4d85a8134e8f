"""`mxgate parse FILE`: what the gateway understands of a message, and with --auth, who sent it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mxgate.authn.check import Authenticator
from mxgate.authn.results import authentication_results
from mxgate.cli import COMMANDS
from mxgate.cli.auth import describe_authentication
from mxgate.cli.common import add_settings_arguments, print_json, settings_from, table
from mxgate.errors import ConfigError, PermanentError
from mxgate.local.bootstrap import build_resolver
from mxgate.local.config import DnsConfig, LocalConfig, load_config
from mxgate.message.model import Address, ParsedMessage, SmtpEnvelope
from mxgate.message.parse import parse_stream

BODY_LINES = 8  # the first lines of each body, in the human output
LINE_WIDTH = 160


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "parse",
        help=COMMANDS["parse"].help,
        description="Parse FILE (a raw RFC 5322 message) as the pipeline does: addresses, "
        "subject, message id, the first lines of each body, attachments and defects. With "
        "--auth, also check SPF, DKIM and DMARC through the DNS configured in the local "
        "configuration (dns:), as if the message came from --ip.",
    )
    add_settings_arguments(parser)
    parser.add_argument("file", type=Path, metavar="FILE")
    parser.add_argument("--json", action="store_true", help="print the whole model as JSON")
    auth = parser.add_argument_group("sender authentication")
    auth.add_argument("--auth", action="store_true", help="check SPF, DKIM and DMARC")
    auth.add_argument("--ip", default="", help="the connecting client's IP address")
    auth.add_argument("--mail-from", default="", help="the envelope sender (MAIL FROM)")
    auth.add_argument("--helo", default="", help="the name the client gave in HELO/EHLO")
    parser.set_defaults(handler=parse)


def _dns_config(args: argparse.Namespace) -> DnsConfig:
    """The local configuration's DNS settings; the system resolver without a configuration."""
    settings = settings_from(args)
    if not settings.config.exists():
        if settings.explicit("config"):
            raise ConfigError(f"{settings.config}: no such configuration file")
        return LocalConfig().dns
    return load_config(settings).dns


def parse(args: argparse.Namespace) -> int:
    try:
        stream = args.file.open("rb")
    except OSError as error:
        raise PermanentError(f"{args.file}: {error.strerror}") from error
    envelope = None
    if args.auth or args.ip or args.mail_from or args.helo:
        envelope = SmtpEnvelope(mail_from=args.mail_from, helo=args.helo, client_ip=args.ip)
    with stream:
        message = parse_stream(stream, envelope=envelope)
    authentication = None
    if args.auth:
        resolver = build_resolver(_dns_config(args))
        with args.file.open("rb") as again:
            authentication = Authenticator(resolver, settings_from(args).hostname).authenticate(
                again, client_ip=args.ip, mail_from=args.mail_from, helo=args.helo
            )
    if args.json:
        document: dict[str, Any] = message.model_dump(mode="json", by_alias=True)
        if authentication is not None:
            document["authentication"] = {
                **authentication.model_dump(mode="json"),
                "verdicts": authentication.verdicts.model_dump(mode="json"),
                "header": authentication_results(authentication),
            }
        print_json(document)
        return 0
    print(describe(message))
    if authentication is not None:
        print()
        print(describe_authentication(authentication))
    return 0


def _addresses(addresses: list[Address]) -> str:
    return ", ".join(f"{a.name} <{a.address}>" if a.name else a.address for a in addresses)


def _first_lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.strip("\n").splitlines()]
    shown = [
        f"  | {line[:LINE_WIDTH]}" + ("..." if len(line) > LINE_WIDTH else "")
        for line in lines[:BODY_LINES]
    ]
    if len(lines) > BODY_LINES:
        shown.append(f"  | ... ({len(lines) - BODY_LINES} more lines)")
    return shown


def describe(message: ParsedMessage) -> str:
    rows = [
        ("Message-ID", message.message_id or "(none)"),
        ("Date", message.date or "(none)"),
        ("From", _addresses(message.from_)),
        ("Sender", _addresses(message.sender)),
        ("Reply-To", _addresses(message.reply_to)),
        ("To", _addresses(message.to)),
        ("Cc", _addresses(message.cc)),
        ("Subject", message.subject),
        ("In-Reply-To", message.in_reply_to or ""),
        ("Size", f"{message.size} bytes, sha256 {message.sha256[:16]}"),
    ]
    flags = [
        name
        for name, on in (
            ("auto-submitted", message.auto_submitted),
            ("auto-reply", message.auto_reply),
            ("bulk", message.bulk),
            ("delivery status notification", message.dsn),
            ("read receipt requested", message.read_receipt_requested),
        )
        if on
    ]
    if flags:
        rows.append(("Flags", ", ".join(flags)))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows if value]
    if message.unreadable:
        lines.append(f"NOT UNDERSTOOD: {message.unreadable} (the pipeline quarantines it)")
    for label, body in (("Text", message.text), ("HTML", message.html)):
        if body is not None:
            lines.append(f"{label} body ({len(body)} characters):")
            lines.extend(_first_lines(body))
    for status in message.delivery_status:
        lines.append(
            f"Delivery status: {status.final_recipient} {status.action} {status.status} "
            f"{status.diagnostic_code}".rstrip()
        )
    if message.attachments:
        lines.append(f"Attachments ({len(message.attachments)}):")
        rows_shown = [
            [
                a.filename or "(no name)",
                a.content_type
                + (
                    f" (looks like {a.sniffed_type})"
                    if _differs(a.content_type, a.sniffed_type)
                    else ""
                ),
                str(a.size),
                a.disposition,
                a.sha256[:16],
            ]
            for a in message.attachments
        ]
        table_text = table(rows_shown, ["FILENAME", "TYPE", "BYTES", "DISPOSITION", "SHA256"])
        lines.extend(f"  {line}" for line in table_text.splitlines())
    for signature in message.signatures:
        lines.append(
            f"Signed: {signature.content_type} ({signature.filename or 'no name'}, "
            f"{signature.size} bytes{', micalg ' + signature.micalg if signature.micalg else ''})"
        )
    if message.defects:
        lines.append(f"Defects ({len(message.defects)}):")
        lines.extend(f"  - {defect}" for defect in message.defects)
    return "\n".join(lines)


def _differs(declared: str, sniffed: str | None) -> bool:
    """Worth showing: the content is not what the label says (a generic label says nothing,
    and any text or message type is text)."""
    if sniffed is None or declared in (sniffed, "application/octet-stream"):
        return False
    return not (sniffed == "text/plain" and declared.startswith(("text/", "message/")))
