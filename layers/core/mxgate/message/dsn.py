"""Delivery status notifications (RFC 3464): what the sender receives when mail for some of
its recipients failed for good: a Bounce rule action, or a deferred delivery whose lifetime ran
out (status 4.4.7).

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

DIAGNOSTIC_MAX = 900  # characters of a Diagnostic-Code: one field, within RFC 5322's 998
SUBJECT_MAX = 200  # of the original subject quoted in the DSN's own


@dataclass(frozen=True, slots=True)
class DsnReport:
    reporting_mta: str  # this gateway's host name
    sender: str  # the DSN's From field
    envelope_sender: str  # who gets the DSN: the original MAIL FROM
    recipients: Sequence[str]  # the recipients that failed
    status: str  # enhanced status code: "5.1.1", "4.4.7"
    diagnostic: str  # an SMTP reply ("550 5.1.1 ...") or another system's error
    explanation: str  # the human-readable part
    subject: str  # the DSN's Subject
    last_attempt: datetime
    arrival_date: datetime | None = None
    envelope_id: str | None = None  # the gateway's message id, for the sender's reference


def should_notify(envelope_sender: str) -> bool:
    """Never answer the null sender (a DSN about a DSN loops) or the postmaster's robots."""
    local = envelope_sender.rpartition("@")[0].casefold()
    return bool(envelope_sender) and local not in {"mailer-daemon", "postmaster"}


def _text_part(text: str, subtype: str) -> MIMEText:
    charset = "us-ascii" if text.isascii() else "utf-8"
    return MIMEText(text, subtype, charset, policy=policy.SMTP)


def _fields(pairs: Sequence[tuple[str, str]]) -> Message:
    """One block of a message/delivery-status body: header fields, no body."""
    block = Message(policy=policy.SMTP)
    for name, value in pairs:
        block[name] = value
    return block


def delivery_status_notification(report: DsnReport, original: bytes) -> bytes:
    """The DSN as bytes, ready to send with `MAIL FROM:<>` to `report.envelope_sender`."""
    domain = report.reporting_mta
    diagnostic = " ".join(report.diagnostic.split())[:DIAGNOSTIC_MAX]
    kind = "smtp" if diagnostic[:3].isdigit() else "x-mxgate"  # an SMTP reply, or an API error
    per_message = [("Reporting-MTA", f"dns; {domain}")]
    if report.envelope_id is not None:
        per_message.append(("X-Mxgate-Envelope-Id", report.envelope_id))
    if report.arrival_date is not None:
        per_message.append(("Arrival-Date", format_datetime(report.arrival_date)))
    status = MIMEBase("message", "delivery-status", policy=policy.SMTP)
    status.set_payload(
        [
            _fields(per_message),
            *(
                _fields(
                    [
                        ("Final-Recipient", f"rfc822; {recipient}"),
                        ("Action", "failed"),
                        ("Status", report.status),
                        ("Diagnostic-Code", f"{kind}; {diagnostic}"),
                        ("Last-Attempt-Date", format_datetime(report.last_attempt)),
                    ]
                )
                for recipient in report.recipients
            ),
        ]
    )
    headers = original[: header_block_end(original)]
    original_headers = headers.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n")
    parts: list[MIMEBase] = [
        _text_part(report.explanation, "plain"),
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
    dsn["Subject"] = report.subject
    dsn["Date"] = format_datetime(report.last_attempt)
    dsn["Message-ID"] = make_msgid("dsn", domain=domain)
    dsn["Auto-Submitted"] = "auto-replied"  # RFC 3834: no vacation replies to this
    return dsn.as_bytes(policy=policy.SMTP)


def bounce_subject(original_subject: str) -> str:
    subject = "Delivery Status Notification (Failure)"
    quoted = " ".join(original_subject.split())[:SUBJECT_MAX]
    return f"{subject}: {quoted}" if quoted else subject


def expiry_dsn(
    *,
    original: bytes,
    envelope_sender: str,
    recipients: Sequence[str],
    diagnostic: str,
    reporting_mta: str,
    dsn_from: str,
    last_attempt: datetime,
    envelope_id: str,
    arrival: datetime | None = None,
) -> bytes:
    """The DSN of a deferred delivery that gave up (4.4.7: delivery time expired)."""
    listed = "\n".join(f"  <{r}>" for r in recipients)
    explanation = (
        f"This is the mail system at host {reporting_mta}.\n\n"
        "Your message could not be delivered to the recipients below. The gateway kept trying,\n"
        "and gave up when the time a message may wait for delivery ran out.\n\n"
        f"{listed}\n\nThe last attempt said: {diagnostic}\n"
    )
    report = DsnReport(
        reporting_mta=reporting_mta,
        sender=f"Mail Delivery System <{dsn_from}>",
        envelope_sender=envelope_sender,
        recipients=recipients,
        status="4.4.7",
        diagnostic=diagnostic,
        explanation=explanation,
        subject="Undelivered Mail Returned to Sender",
        last_attempt=last_attempt,
        arrival_date=arrival,
        envelope_id=envelope_id,
    )
    return delivery_status_notification(report, original)
