"""Every real-world message in the shared corpus, file by file: nothing escapes, and what comes
out is sane (text without surrogate escapes, attachment sizes that are their decoded bytes,
delivery status notifications flagged)."""

from __future__ import annotations

import email
import hashlib
from email import policy

import pytest

from mxgate.message.model import ParsedMessage
from mxgate.message.parse import parse_message, parse_stream
from tests.mailtools import CORPUS, Store, Trickle

FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name != "README.md")
# Not messages at all: they must come out unreadable (and be quarantined), not crash.
NOT_MESSAGES = {
    "mikel-mail/sample_output_multipart": "empty message",  # an empty file
    "mail-parser/mail_outlook_1": "no header fields",  # an Outlook .msg (OLE) file
}


def test_the_corpus_is_there():
    assert len(FILES) > 100, f"no corpus under {CORPUS}"


def _clean(text: str | None, what: str) -> None:
    if text is None:
        return
    assert isinstance(text, str), what
    text.encode("utf-8")  # raises on a surrogate escape
    assert "\x00" not in text, what


def _check_sane(message: ParsedMessage, store: Store) -> None:
    _clean(message.subject, "subject")
    for address in [*message.from_, *message.sender, *message.reply_to, *message.to, *message.cc]:
        _clean(address.name, "display name")
        _clean(address.address, "address")
    for header in message.headers:
        _clean(header.value, header.name)
    _clean(message.text, "text")
    _clean(message.html, "html")
    for attachment in message.attachments:
        _clean(attachment.filename, "filename")
        assert attachment.safe_filename
        assert "/" not in attachment.safe_filename
        assert "\\" not in attachment.safe_filename
        content = store.content[attachment.sha256]
        assert len(content) == attachment.size, attachment.filename
        if attachment.message is not None:
            _check_sane(attachment.message, store)


def _digests(message: ParsedMessage) -> set[str]:
    """Every attachment's and detached signature's digest, those of attached messages
    included."""
    found = {signature.sha256 for signature in message.signatures}
    for attachment in message.attachments:
        found.add(attachment.sha256)
        if attachment.message is not None:
            found |= _digests(attachment.message)
    return found


def _stdlib_attachment_digests(raw: bytes) -> set[str]:
    """What the standard library decodes from base64 parts with a filename, at any depth."""
    digests = set()
    for part in email.message_from_bytes(raw, policy=policy.compat32).walk():
        if part.is_multipart() or part.get_content_maintype() == "message":
            continue
        encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
        if encoding == "base64" and part.get_filename():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes) and payload:
                digests.add(hashlib.sha256(payload).hexdigest())
    return digests


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_message(path):
    raw = path.read_bytes()
    name = str(path.relative_to(CORPUS))
    store = Store()
    message = parse_message(raw, store=store)

    if name in NOT_MESSAGES:
        assert message.unreadable is not None
        assert NOT_MESSAGES[name] in message.unreadable
        return
    assert message.unreadable is None, message.unreadable
    assert message.size == len(raw)
    _check_sane(message, store)
    assert _stdlib_attachment_digests(raw) <= _digests(message)

    reference = email.message_from_bytes(raw, policy=policy.compat32)
    is_dsn = (
        reference.get_content_type() == "multipart/report"
        and str(reference.get_param("report-type", "")).lower() == "delivery-status"
    )
    assert message.dsn == is_dsn
    if "multipart_report_emails" in name:
        assert message.dsn
        assert message.delivery_status
        assert all(s.final_recipient and s.status for s in message.delivery_status)

    assert parse_stream(Trickle(raw, 13)) == parse_message(raw)  # chunking changes nothing
