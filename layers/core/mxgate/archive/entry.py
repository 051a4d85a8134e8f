"""What the index keeps of an archived message. Pure."""

from __future__ import annotations

from datetime import datetime

from mxgate.archive.query import ArchivedMessage
from mxgate.message.parse import ParseOnce
from mxgate.message.raw import RawMessage
from mxgate.records import Envelope


def archived_message(
    *,
    archive_id: str,
    archived_message_id: str,
    key: str,
    message: RawMessage,
    envelope: Envelope,
    recipients: list[str],
    archived_at: datetime,
    parses: ParseOnce | None = None,
) -> ArchivedMessage:
    """The row for one archived copy: its header fields as written (decoded), the envelope of
    the recipients it was archived for, and whether it carries attachments. Its parse is kept
    in `parses` (the worker's) for the Process step of the same message."""
    with message.open() as stream:  # read in chunks, attachments not kept
        parsed = (parses or ParseOnce()).parse(stream)

    def field(name: str) -> str:
        return ", ".join(h.value for h in parsed.headers if h.name.casefold() == name)

    return ArchivedMessage(
        archived_message_id=archived_message_id,
        archive_id=archive_id,
        received_at=archived_at,
        message_id=parsed.message_id or "",
        date=parsed.date or "",
        from_=field("from"),
        to=field("to"),
        cc=field("cc"),
        subject=parsed.subject,
        envelope_from=envelope.mail_from,
        envelope_to=recipients,
        has_attachments=any(
            a.disposition == "attachment" or a.filename for a in parsed.attachments
        ),
        size=message.size,
        ingress_point=envelope.ingress_point,
        sender_ip=envelope.source_ip,
        helo=envelope.helo,
        key=key,
    )
