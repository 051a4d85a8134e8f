"""Delivery status notifications (RFC 3464, in a multipart/report of RFC 6522): what the
envelope sender receives when a deferred delivery expires."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from email import policy
from email.message import EmailMessage, Message
from email.utils import format_datetime, make_msgid

from mxgate.message.headers import header_block_end


def _fields(pairs: Sequence[tuple[str, str]]) -> Message:
    """One block of a message/delivery-status body: header fields, no body."""
    block = Message(policy=policy.SMTP)
    for name, value in pairs:
        block[name] = value
    return block


def should_notify(envelope_sender: str) -> bool:
    """Never answer the null sender (a DSN about a DSN loops) or the postmaster's robots."""
    local = envelope_sender.rpartition("@")[0].casefold()
    return bool(envelope_sender) and local not in {"mailer-daemon", "postmaster"}


def expiry_dsn(
    *,
    original: bytes,
    envelope_sender: str,
    recipients: Sequence[str],
    diagnostic: str,
    reporting_mta: str,
    dsn_from: str,
    arrival: datetime | None,
    last_attempt: datetime,
    envelope_id: str,
) -> bytes:
    """A DSN saying delivery to `recipients` failed for good after retrying (status 4.4.7:
    delivery time expired), with the original's header section attached."""
    report = EmailMessage(policy=policy.SMTP)
    report["From"] = f"Mail Delivery System <{dsn_from}>"
    report["To"] = envelope_sender
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Date"] = format_datetime(last_attempt)
    report["Message-ID"] = make_msgid("dsn", domain=reporting_mta)
    report["Auto-Submitted"] = "auto-replied"
    report.set_type("multipart/report")
    report.set_param("report-type", "delivery-status")

    human = EmailMessage(policy=policy.SMTP)
    listed = "\n".join(f"  <{r}>" for r in recipients)
    human.set_content(
        f"This is the mail system at host {reporting_mta}.\n\n"
        "Your message could not be delivered to the recipients below. The gateway kept trying,\n"
        "and gave up when the time a message may wait for delivery ran out.\n\n"
        f"{listed}\n\nThe last attempt said: {diagnostic}\n",
        charset="utf-8",
    )

    one_line = " ".join(diagnostic.split())[:900]
    kind = "smtp" if one_line[:3].isdigit() else "x-mxgate"  # an SMTP reply, or an API error
    per_message = [
        ("Reporting-MTA", f"dns; {reporting_mta}"),
        ("X-Mxgate-Envelope-Id", envelope_id),
    ]
    if arrival is not None:
        per_message.append(("Arrival-Date", format_datetime(arrival)))
    blocks = [per_message] + [
        [
            ("Final-Recipient", f"rfc822; {recipient}"),
            ("Action", "failed"),
            ("Status", "4.4.7"),
            ("Diagnostic-Code", f"{kind}; {one_line}"),
            ("Last-Attempt-Date", format_datetime(last_attempt)),
        ]
        for recipient in recipients
    ]
    status = EmailMessage(policy=policy.SMTP)
    status.add_header("Content-Type", "message/delivery-status")
    status.set_payload([_fields(block) for block in blocks])

    headers = EmailMessage(policy=policy.SMTP)
    headers.add_header("Content-Type", "text/rfc822-headers")
    headers.set_payload(original[: header_block_end(original)].decode("ascii", "replace"))

    report.attach(human)
    report.attach(status)
    report.attach(headers)
    return report.as_bytes()
