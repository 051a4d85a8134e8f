"""Claim checks: a message too large for its route is replaced by a short stub that says what
it was and links to the stored original, so it never vanishes and the recipient can fetch it."""

from __future__ import annotations

from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid

from mxgate.message.model import Address, ParsedMessage

CLAIM_CHECK_HEADER = "X-Mxgate-Claim-Check"


def _addresses(found: list[Address]) -> str:
    return ", ".join(formataddr((a.name, a.address)) for a in found)


def _size(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 100_000 else f"{n:,} bytes"


def claim_check_stub(
    parsed: ParsedMessage,
    *,
    size: int,
    limit: int,
    link: str,
    gateway_host: str,
    link_expires: datetime | None = None,
) -> bytes:
    """The stub: the original's From, To, Cc, Subject and Date, a text body with the link."""
    stub = EmailMessage(policy=policy.SMTP)
    if parsed.from_:
        stub["From"] = _addresses(parsed.from_)
    if parsed.reply_to:
        stub["Reply-To"] = _addresses(parsed.reply_to)
    if parsed.to:
        stub["To"] = _addresses(parsed.to)
    if parsed.cc:
        stub["Cc"] = _addresses(parsed.cc)
    stub["Subject"] = f"[too large to deliver] {parsed.subject}".strip()
    stub["Date"] = parsed.date or formatdate(usegmt=True)
    stub["Message-ID"] = make_msgid("claim-check", domain=gateway_host)
    if parsed.message_id:
        stub["References"] = f"<{parsed.message_id}>"
    stub[CLAIM_CHECK_HEADER] = link
    lines = [
        f"This message was too large to deliver here ({_size(size)}; the limit is {_size(limit)}).",
        "The mail gateway kept the original. Download it (an .eml file) from:",
        "",
        f"  {link}",
        "",
        *(
            [f"The link works until {link_expires:%A %d %B %Y, %H:%M} UTC.", ""]
            if link_expires is not None
            else []
        ),
        f"Subject: {parsed.subject}",
        f"From: {_addresses(parsed.from_)}",
    ]
    if parsed.date:
        lines.append(f"Date: {parsed.date}")
    if parsed.attachments:
        lines.append("Attachments:")
        lines += [
            f"  {a.filename or '(unnamed)'}  {a.content_type}  {_size(a.size)}"
            for a in parsed.attachments
        ]
    stub.set_content("\n".join(lines) + "\n", charset="utf-8")
    return stub.as_bytes()
