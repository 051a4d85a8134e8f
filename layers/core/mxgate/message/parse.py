"""Parse raw bytes into the message model.

A wrong charset, a broken header or a missing part never raises: it becomes a defect.
"""

from __future__ import annotations

import email.utils
import hashlib
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from typing import Any

from mxgate.message.model import Address, Attachment, ParsedMessage

_PARSER = BytesParser(policy=policy.default)
_HEADER_PARSER = BytesHeaderParser(policy=policy.default)


def _text(value: object) -> str:
    text = str(value)
    # surrogate escapes come from undecodable 8-bit bytes: show them as U+FFFD instead
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def header_values(message: Message, name: str) -> list[str]:
    values = []
    for value in message.get_all(name, []):
        try:
            values.append(_text(value))
        except Exception:  # noqa: BLE001 -- a broken header is a defect, never a crash
            values.append("")
    return values


def addresses(message: Message, name: str, defects: list[str]) -> list[Address]:
    found: list[Address] = []
    header: Any
    for header in message.get_all(name, []):
        try:
            groups = header.addresses  # email.headerregistry.AddressHeader
            found.extend(
                Address(name=_text(a.display_name), address=_text(a.addr_spec))
                for a in groups
                if a.addr_spec and a.addr_spec != "<>"
            )
        except Exception:  # noqa: BLE001 -- fall back to the lenient parser
            defects.append(f"{name}: unparsable address header")
            found.extend(
                Address(name=_text(display), address=_text(addr))
                for display, addr in email.utils.getaddresses([_text(header)])
                if addr
            )
    return found


def parse_header_section(raw: bytes) -> EmailMessage:
    """Only the header section: what the rule set needs, at a fraction of a full parse."""
    message = _HEADER_PARSER.parsebytes(raw, headersonly=True)
    assert isinstance(message, EmailMessage)
    return message


def _body(message: EmailMessage, preference: tuple[str, ...], defects: list[str]) -> str | None:
    try:
        part = message.get_body(preferencelist=preference)
    except Exception:  # noqa: BLE001
        defects.append(f"cannot locate the {preference[0]} body")
        return None
    if part is None or part.get_content_type() != f"text/{preference[0]}":
        return None
    try:
        return _text(part.get_content()).replace("\r\n", "\n")
    except (LookupError, UnicodeError, AssertionError, ValueError):
        payload = part.get_payload(decode=True)
        defects.append(f"text/{preference[0]}: undecodable with its declared charset")
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else None


def _attachments(message: EmailMessage) -> list[Attachment]:
    found = []
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        found.append(
            Attachment(
                filename=part.get_filename(),
                content_type=part.get_content_type(),
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                disposition=part.get_content_disposition() or "attachment",
            )
        )
    return found


def parse_message(raw: bytes) -> ParsedMessage:
    message = _PARSER.parsebytes(raw)
    assert isinstance(message, EmailMessage)
    defects = [type(d).__name__ for d in message.defects]
    message_id = next(iter(header_values(message, "message-id")), "").strip().strip("<>") or None
    return ParsedMessage.model_validate(
        {
            "message_id": message_id,
            "subject": next(iter(header_values(message, "subject")), ""),
            "date": next(iter(header_values(message, "date")), None),
            "from": addresses(message, "from", defects),
            "sender": addresses(message, "sender", defects),
            "reply_to": addresses(message, "reply-to", defects),
            "to": addresses(message, "to", defects),
            "cc": addresses(message, "cc", defects),
            "text": _body(message, ("plain",), defects),
            "html": _body(message, ("html",), defects),
            "attachments": _attachments(message),
            "auto_submitted": next(iter(header_values(message, "auto-submitted")), "no").lower()
            != "no",
            "read_receipt_requested": bool(message.get("disposition-notification-to")),
            "size": len(raw),
            "defects": defects,
        }
    )
