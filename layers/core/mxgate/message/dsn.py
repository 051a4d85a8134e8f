"""Delivery status notifications (RFC 3464): what a Bounce rule action sends back.

A DSN is a multipart/report (RFC 6522) of three parts: a human-readable explanation, the
machine-readable message/delivery-status fields, and the original header section
(text/rfc822-headers). It is sent with a null envelope sender (RFC 5321 4.5.5), so a DSN
is never answered with another one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, make_msgid

from mxgate.message.headers import header_block_end


@dataclass(frozen=True, slots=True)
class BounceReport:
    reporting_mta: str  # this gateway's host name
    sender: str  # the From of the DSN (BounceAction.Sender)
    envelope_sender: str  # who gets the DSN: the original MAIL FROM
    recipients: Sequence[str]  # the recipients that bounced
    status: str  # enhanced status code, "5.1.1"
    smtp_reply_code: str  # "550"
    diagnostic: str  # BounceAction.DiagnosticMessage
    explanation: str | None  # BounceAction.Message
    arrival_date: datetime
    original_subject: str = ""


def _text_part(text: str, subtype: str) -> MIMEText:
    charset = "us-ascii" if text.isascii() else "utf-8"
    return MIMEText(text, subtype, charset, policy=policy.SMTP)


def _fields(pairs: Sequence[tuple[str, str]]) -> Message:
    block = Message(policy=policy.SMTP)
    for name, value in pairs:
        block[name] = value
    return block


def delivery_status_notification(report: BounceReport, original: bytes, now: datetime) -> bytes:
    """The DSN as bytes, ready to send with `MAIL FROM:<>` to `report.envelope_sender`."""
    domain = report.reporting_mta
    listed = "\n".join(f"  {recipient}" for recipient in report.recipients)
    human = report.explanation or (
        "This is the mail gateway at "
        f"{domain}.\n\nYour message could not be delivered to:\n\n{listed}\n\n"
        f"Reason: {report.smtp_reply_code} {report.status} {report.diagnostic}\n"
    )
    status = MIMEBase("message", "delivery-status", policy=policy.SMTP)
    del status["MIME-Version"]
    status.set_payload(
        [
            _fields(
                [
                    ("Reporting-MTA", f"dns; {domain}"),
                    ("Arrival-Date", format_datetime(report.arrival_date)),
                ]
            ),
            *(
                _fields(
                    [
                        ("Final-Recipient", f"rfc822; {recipient}"),
                        ("Action", "failed"),
                        ("Status", report.status),
                        (
                            "Diagnostic-Code",
                            f"smtp; {report.smtp_reply_code} {report.status} {report.diagnostic}",
                        ),
                        ("Last-Attempt-Date", format_datetime(now)),
                    ]
                )
                for recipient in report.recipients
            ),
        ]
    )
    headers = original[: header_block_end(original)]
    original_headers = headers.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n")
    parts: list[MIMEBase] = [
        _text_part(human, "plain"),
        status,
        _text_part(original_headers + "\n", "rfc822-headers"),
    ]
    for part in parts:
        del part["MIME-Version"]
    dsn = MIMEMultipart(
        "report", _subparts=parts, policy=policy.SMTP, report_type="delivery-status"
    )
    dsn["From"] = report.sender
    dsn["To"] = report.envelope_sender
    subject = "Delivery Status Notification (Failure)"
    original_subject = " ".join(report.original_subject.split())[:200]
    dsn["Subject"] = f"{subject}: {original_subject}" if original_subject else subject
    dsn["Date"] = format_datetime(now)
    dsn["Message-ID"] = make_msgid(domain=domain)
    dsn["Auto-Submitted"] = "auto-replied"  # RFC 3834: no vacation replies to this
    return dsn.as_bytes(policy=policy.SMTP)
