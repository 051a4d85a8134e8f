"""The classic SES receiving notification, as InvokeLambda and PublishToSns deliver it.

`mail` describes the message (envelope, header fields, common headers) and `receipt` what
happened to it (recipients, verdicts, the action). A Lambda function gets
`{"Records": [{"eventSource": "aws:ses", "eventVersion": "1.0", "ses": {mail, receipt}}]}`;
an SNS topic gets `{"notificationType": "Received", mail, receipt, content?}` as the SNS
message. Mail Manager documents that it uses this format, not every field it fills; the
verdicts it cannot know here (spam, virus) are GRAY, and SPF/DKIM come from MessageFacts.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from mxgate.mailmanager.facts import MessageFacts
from mxgate.message.parse import addresses, header_values, parse_header_section

LAMBDA_HEADER_LIMIT = 10 * 1024  # SES truncates the headers of a Lambda event at 10 KB
SNS_CONTENT_HEADER_LIMIT = 20 * 1024  # PublishToSns CONTENT: the content plus 20 KB of headers
SNS_HEADERS_LIMIT = 100 * 1024  # PublishToSns HEADERS: up to 100 KB of header fields
SNS_MESSAGE_LIMIT = 256 * 1024  # an SNS message is at most 256 KB
_FOLD = re.compile(r"\r?\n(?=[ \t])")


def ses_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _header_list(raw: bytes, limit: int) -> tuple[list[dict[str, str]], bool]:
    message = parse_header_section(raw)
    fields: list[dict[str, str]] = []
    used = 0
    for name, value in message.raw_items():
        text = _FOLD.sub("", str(value)).encode("utf-8", "surrogateescape")
        shown = text.decode("utf-8", "replace").strip()
        used += len(name) + len(shown) + 4
        if used > limit:
            return fields, True
        fields.append({"name": name, "value": shown})
    return fields, False


def _common_headers(raw: bytes) -> dict[str, Any]:
    message = parse_header_section(raw)
    defects: list[str] = []

    def listed(name: str) -> list[str]:
        return [
            f"{a.name} <{a.address}>" if a.name else a.address
            for a in addresses(message, name, defects)
        ]

    def first(name: str) -> str | None:
        return next(iter(header_values(message, name)), None)

    common: dict[str, Any] = {
        "returnPath": first("return-path"),
        "from": listed("from"),
        "sender": first("sender"),
        "replyTo": listed("reply-to"),
        "date": first("date"),
        "to": listed("to"),
        "cc": listed("cc"),
        "messageId": first("message-id"),
        "subject": first("subject"),
    }
    return {key: value for key, value in common.items() if value not in (None, [])}


def mail_object(
    *,
    message_id: str,
    envelope_sender: str,
    destination: Sequence[str],
    received_at: datetime,
    header: bytes,
    header_limit: int,
) -> dict[str, Any]:
    """SES's `mail` object of a message, from its header section."""
    headers, truncated = _header_list(header, header_limit)
    return {
        "timestamp": ses_timestamp(received_at),
        "source": envelope_sender,
        "messageId": message_id,
        "destination": list(destination),
        "headersTruncated": truncated,
        "headers": headers,
        "commonHeaders": _common_headers(header),
    }


def receipt_object(
    *,
    recipients: Sequence[str],
    facts: MessageFacts,
    received_at: datetime,
    now: datetime,
    action: dict[str, Any],
) -> dict[str, Any]:
    receipt: dict[str, Any] = {
        "timestamp": ses_timestamp(now),
        "processingTimeMillis": max(0, int((now - received_at).total_seconds() * 1000)),
        "recipients": list(recipients),
        "spamVerdict": {"status": "GRAY"},  # Mail Manager scans only through add-ons
        "virusVerdict": {"status": "GRAY"},
        "spfVerdict": {"status": facts.spf.value},
        "dkimVerdict": {"status": facts.dkim.value},
        "dmarcVerdict": {"status": "PROCESSING_FAILED"},  # until authentication exists
        "action": action,
    }
    if facts.dmarc_policy is not None:
        receipt["dmarcPolicy"] = facts.dmarc_policy.value.lower()
    return receipt


def lambda_event(mail: dict[str, Any], receipt: dict[str, Any]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventSource": "aws:ses",
                "eventVersion": "1.0",
                "ses": {"mail": mail, "receipt": receipt},
            }
        ]
    }


def sns_content(raw: bytes, encoding: str) -> str:
    """The message for a CONTENT notification: UTF-8 text, or BASE64 to keep every byte."""
    if encoding == "BASE64":
        return base64.b64encode(raw).decode("ascii")
    return raw.decode("utf-8", "replace")
