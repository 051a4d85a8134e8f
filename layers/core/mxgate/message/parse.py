"""Parse a raw message into the model, streaming it from a file or an object store.

A wrong charset, a broken header or a missing part never raises: it becomes a defect. A
configured limit stops the parse with a reason in `unreadable`, and so does input that is not
a message at all; the pipeline quarantines such a message with that reason.
Past the usual size on purpose: the model is built here in one pass over the part tree, and
the address, date and id readers it uses are the ones every header-only reader shares.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import hashlib
import io
import logging
import mimetypes
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from typing import Any, BinaryIO

from mxgate.message.attachments import AttachmentStore, extract_uuencoded, safe_filename, sniff
from mxgate.message.headers import header_block_end
from mxgate.message.mime import KEPT_TYPES, LimitExceeded, MimeParser, Part, Source
from mxgate.message.model import (
    Address,
    Attachment,
    DeliveryStatus,
    HeaderField,
    ParsedMessage,
    ParseLimits,
    Signature,
    SmtpEnvelope,
)
from mxgate.message.text import clean, decode_bytes, decode_words, header_text, unfold

log = logging.getLogger("mxgate.message")

_HEADER_PARSER = BytesHeaderParser(policy=policy.default)
_DEFAULT_LIMITS = ParseLimits()
_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")
_HTML_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([\w.:-]+)", re.IGNORECASE)
# RFC 5322 3.6: fields that may appear at most once.
_SINGLE = ("from", "sender", "reply-to", "to", "cc", "subject", "date", "message-id")
_BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})


def parse_message(
    raw: bytes,
    *,
    limits: ParseLimits | None = None,  # None: ParseLimits()
    store: AttachmentStore | None = None,
    envelope: SmtpEnvelope | None = None,
) -> ParsedMessage:
    return parse_stream(io.BytesIO(raw), limits=limits, store=store, envelope=envelope)


def parse_stream(
    stream: BinaryIO,
    *,
    limits: ParseLimits | None = None,  # None: ParseLimits()
    store: AttachmentStore | None = None,
    envelope: SmtpEnvelope | None = None,
) -> ParsedMessage:
    """Parse the message `stream` holds, reading it once, in chunks. With `store`, every
    attachment's content is kept there and its key recorded."""
    source = Source(stream)
    root = Part(path="")
    unreadable: str | None = None
    parser = MimeParser(source, limits or _DEFAULT_LIMITS, keep_attachments=store is not None)
    try:
        parser.message(root)
    except LimitExceeded as error:
        unreadable = f"limit exceeded: {error}"
    except Exception as error:  # a parser bug must cost one message its parse, never its delivery
        log.exception("message parser failed")
        unreadable = f"parser failure: {type(error).__name__}"
    try:
        source.drain()
        if unreadable is None and not root.fields:
            unreadable = "empty message" if source.size == 0 else "no header fields: not a message"
        return _Builder(store).message(
            root, size=source.size, sha256=source.sha256, unreadable=unreadable, envelope=envelope
        )
    finally:
        parser.release()


class ParseOnce:
    """One full parse of a message for the steps of one worker run that parse the same bytes:
    the rule set's Archive index, then the Process step (each reads its own copy: the spool
    file, the stored object). A parse is kept only inside `one_message()`, one at a time, and
    serves a request for the same bytes (by SHA-256) and limits; one made without an attachment
    store serves a request with one only when it found no attachment to keep.

    Also the bytes of a small message Process read (`keep_bytes`), for the Deliver steps of the
    same run: their documents carry those bytes in base64, whose decoding cost about 1 % of a
    worker's CPU a 5 KB message."""

    def __init__(self) -> None:
        self._open = False
        self._kept: tuple[ParseLimits, ParsedMessage, bool] | None = None  # ..., with a store
        self._bytes: tuple[str, bytes] | None = None  # (SHA-256, the message)

    @contextlib.contextmanager
    def one_message(self) -> Iterator[None]:
        self._open = True
        try:
            yield
        finally:
            self._open, self._kept, self._bytes = False, None, None

    def keep_bytes(self, message: bytes, sha256: str) -> None:
        """Keep a message's bytes, whose SHA-256 is `sha256`, for the rest of the run."""
        if self._open:
            self._bytes = (sha256, message)

    def kept_bytes(self, sha256: str) -> bytes | None:
        """The kept bytes of the message with this SHA-256, if they are the ones kept."""
        if self._bytes is not None and self._bytes[0] == sha256:
            return self._bytes[1]
        return None

    def parse(
        self,
        stream: BinaryIO,
        *,
        limits: ParseLimits | None = None,
        store: AttachmentStore | None = None,
    ) -> ParsedMessage:
        """`parse_stream` of a seekable stream, or the kept parse of the same bytes."""
        limits = limits or _DEFAULT_LIMITS
        if self._kept is not None:
            kept_limits, parsed, with_store = self._kept
            usable = kept_limits == limits and (
                with_store or store is None or not parsed.attachments
            )
            if usable and _sha256(stream) == parsed.sha256:
                return parsed
        parsed = parse_stream(stream, limits=limits, store=store)
        if self._open:
            self._kept = (limits, parsed, store is not None)
        return parsed


def _sha256(stream: BinaryIO) -> str:
    """The digest of a seekable stream from where it stands; it is left there."""
    start, digest = stream.tell(), hashlib.sha256()
    while chunk := stream.read(1 << 16):
        digest.update(chunk)
    stream.seek(start)
    return digest.hexdigest()


@dataclass
class _Found:
    """What a walk over the part tree collects for one message."""

    texts: list[str] = field(default_factory=list)
    htmls: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    signatures: list[Signature] = field(default_factory=list)
    statuses: list[DeliveryStatus] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)


# Detached signatures, wherever they appear (RFC 8551 3.5, RFC 3156 5).
SIGNATURE_TYPES = frozenset(
    {"application/pkcs7-signature", "application/x-pkcs7-signature", "application/pgp-signature"}
)


class _Builder:
    """Turns a part tree into the model, keeping attachment content when there is a store."""

    def __init__(self, store: AttachmentStore | None) -> None:
        self.store = store

    def message(
        self,
        root: Part,
        *,
        size: int,
        sha256: str,
        unreadable: str | None = None,
        envelope: SmtpEnvelope | None = None,
    ) -> ParsedMessage:
        defects: list[str] = []
        fields = [
            (name.decode("ascii"), header_text(value, root.header_charset))
            for name, value in root.fields
        ]
        headers: list[HeaderField] = []
        by_name: dict[str, list[str]] = {}
        raw_by_name: dict[str, list[str]] = {}
        for name, raw in fields:
            unfolded = unfold(raw)
            header = HeaderField(
                name=name, value=clean(decode_words(unfolded).strip()), raw=clean(raw)
            )
            headers.append(header)
            lower = name.lower()
            by_name.setdefault(lower, []).append(header.value)
            raw_by_name.setdefault(lower, []).append(unfolded)
        for name in _SINGLE:
            if len(by_name.get(name, ())) > 1:
                defects.append(f"header: {len(by_name[name])} {name} fields")

        def first(name: str) -> str | None:
            values = by_name.get(name)
            return values[0] if values else None

        def addresses(name: str) -> list[Address]:
            found: list[Address] = []
            for value in raw_by_name.get(name, ()):
                found.extend(parse_addresses(value, name, defects))
            return found

        found = _Found(defects=defects)
        self._walk(root, found)
        content_type = root.content_type
        report_type = (
            (root.parameter("report-type") or "").lower() or None
            if content_type == "multipart/report"
            else None
        )
        auto_submitted = (first("auto-submitted") or "no").split(";")[0].strip().lower()
        precedence = (first("precedence") or "").strip().lower() or None
        list_id = first("list-id")
        date = first("date")
        return ParsedMessage.model_validate(
            {
                "message_id": message_id(first("message-id")),
                "subject": first("subject") or "",
                "date": date,
                "sent_at": parse_date(date),
                "from": addresses("from"),
                "sender": addresses("sender"),
                "reply_to": addresses("reply-to"),
                "to": addresses("to"),
                "cc": addresses("cc"),
                "in_reply_to": message_id(first("in-reply-to")),
                "references": [
                    ref for value in by_name.get("references", ()) for ref in message_ids(value)
                ],
                "text": _joined(found.texts),
                "html": _joined(found.htmls),
                "attachments": found.attachments,
                "signatures": found.signatures,
                "headers": headers,
                "auto_submitted": auto_submitted != "no",
                "auto_reply": auto_submitted == "auto-replied"
                or precedence == "auto_reply"
                or any(n in by_name for n in ("x-autoreply", "x-autorespond")),
                "bulk": precedence in _BULK_PRECEDENCE
                or any(n.startswith("list-") for n in by_name),
                "list_id": list_id,
                "precedence": precedence,
                "report_type": report_type,
                "dsn": report_type == "delivery-status",
                "delivery_status": found.statuses,
                "read_receipt_requested": any(
                    n in by_name for n in ("disposition-notification-to", "return-receipt-to")
                ),
                "size": size,
                "sha256": sha256,
                "defects": defects,
                "unreadable": unreadable,
                "envelope": envelope,
            }
        )

    def _walk(self, part: Part, found: _Found) -> None:
        where = f"part {part.path}" if part.path else "message"
        found.defects.extend(f"{where}: {defect}" for defect in part.defects)
        if part.children is not None:
            if part.content_type == "multipart/alternative":
                # one body told several ways: the first plain and the first HTML version
                versions = _Found(
                    attachments=found.attachments,
                    signatures=found.signatures,
                    statuses=found.statuses,
                    defects=found.defects,
                )
                for child in part.children:
                    self._walk(child, versions)
                found.texts.extend(versions.texts[:1])
                found.htmls.extend(versions.htmls[:1])
            elif part.content_type == "multipart/signed" and part.children:
                # RFC 1847: the signed content, then its signature (whatever its type says)
                self._walk(part.children[0], found)
                for child in part.children[1:]:
                    self._signature(child, found, signed=part)
            else:
                for child in part.children:
                    self._walk(child, found)
            return
        if part.body_text is not None:
            self._body(part, where, found)
            return
        content = part.content
        if content is None:
            return
        if part.content_type in SIGNATURE_TYPES:
            self._signature(part, found)
            return
        nested = None
        if part.nested is not None:
            nested = self.message(part.nested, size=content.size, sha256=content.sha256)
        elif part.content_type in KEPT_TYPES and content.data is not None:
            if part.content_type == "text/rfc822-headers":
                nested = self._headers_only(content.data)
            else:
                found.statuses.extend(delivery_statuses(content.data))
        content_id = _content_id(part)
        found.attachments.append(
            Attachment(
                filename=part.filename,
                content_type=part.content_type,
                size=content.size,
                sha256=content.sha256,
                disposition=_disposition(part.disposition, content_id),
                sniffed_type=sniff(content.head),
                names=part.names,
                safe_filename=safe_filename(part.filename, content.sha256, part.content_type),
                content_id=content_id,
                key=self._keep(content.sha256, part.content_type, content.stream()),
                message=nested,
            )
        )

    def _signature(self, part: Part, found: _Found, signed: Part | None = None) -> None:
        if part.content is None:  # not a leaf: walk it as content after all
            self._walk(part, found)
            return
        found.signatures.append(
            Signature(
                content_type=part.content_type,
                protocol=signed.parameter("protocol") if signed is not None else None,
                micalg=signed.parameter("micalg") if signed is not None else None,
                filename=part.filename,
                size=part.content.size,
                sha256=part.content.sha256,
            )
        )

    def _body(self, part: Part, where: str, found: _Found) -> None:
        data = part.body_text or b""
        if part.content_type == "text/plain":
            data, files = extract_uuencoded(data)
            for filename, content in files:
                found.attachments.append(
                    self._attachment(content, filename=filename, disposition="attachment")
                )
        text, defect = decode_bytes(data, part.charset or _html_charset(part, data))
        if defect:
            found.defects.append(f"{where}: {defect}")
        text = clean(text.replace("\r\n", "\n"))
        (found.texts if part.content_type == "text/plain" else found.htmls).append(text)

    def _attachment(self, content: bytes, *, filename: str | None, disposition: str) -> Attachment:
        digest = hashlib.sha256(content).hexdigest()
        sniffed = sniff(content[:512])
        content_type = _guess_type(filename) or "application/octet-stream"
        return Attachment(
            filename=filename,
            content_type=content_type,
            size=len(content),
            sha256=digest,
            disposition=disposition,
            sniffed_type=sniffed,
            names=[filename] if filename else [],
            safe_filename=safe_filename(filename, digest, content_type),
            key=self._keep(digest, content_type, io.BytesIO(content)),
        )

    def _keep(self, sha256: str, content_type: str, content: BinaryIO | None) -> str | None:
        if self.store is None or content is None:
            return None
        return self.store.keep(sha256, content_type, content)

    def _headers_only(self, data: bytes) -> ParsedMessage:
        source = Source(io.BytesIO(data))
        root = Part(path="")
        try:
            MimeParser(source, _DEFAULT_LIMITS, keep_attachments=False).header_section(root)
        except LimitExceeded:
            root.defects.append("returned header section too large")
        return self.message(root, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def _disposition(declared: str | None, content_id: str | None) -> str:
    """As declared; without a declaration, a part with a Content-ID is shown inline (an image
    the HTML refers to) and anything else is an attachment."""
    if declared in ("attachment", "inline"):
        return declared
    return "inline" if content_id else "attachment"


def _content_id(part: Part) -> str | None:
    value = part.text_field(b"content-id")
    return message_id(value) if value else None


def _guess_type(filename: str | None) -> str | None:
    if not filename:
        return None
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return guessed


def _html_charset(part: Part, data: bytes) -> str | None:
    """An HTML body without a declared charset may say it in a <meta> element."""
    if part.content_type != "text/html":
        return None
    found = _HTML_CHARSET.search(data[:4096])
    return found.group(1).decode("ascii") if found else None


def _joined(bodies: list[str]) -> str | None:
    if not bodies:
        return None
    joined = bodies[0]
    for body in bodies[1:]:
        joined += body if joined.endswith("\n") or not joined else "\n" + body
    return joined


def message_id(value: str | None) -> str | None:
    """The first msg-id in a field, without angle brackets; a bare token when none is
    bracketed (real mail writes both)."""
    if not value:
        return None
    found = _MESSAGE_ID.search(value)
    if found is not None:
        return found.group(1)
    token = value.strip().strip("<>").split()
    return token[0] if token else None


def message_ids(value: str) -> list[str]:
    found = _MESSAGE_ID.findall(value)
    return found if found else [t.strip("<>") for t in value.split() if t.strip("<>")]


def parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _ascii_domain(domain: str, defects: list[str]) -> str:
    domain = domain.strip().rstrip(".").lower()
    if domain.startswith("[") or domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        defects.append(f"header: {domain!r} is not a valid internationalised domain")
        return ""


_PLAIN_ADDRESS = r"[^\s<>,\"()\\:;@\[\]]+@[^\s<>,\"()\\:;@\[\]]+"
_PLAIN_MAILBOX = re.compile(
    rf"\s*(?:([^<>,\"()\\:;@\[\]=]*?)\s*<({_PLAIN_ADDRESS})>|({_PLAIN_ADDRESS}))\s*"
)


def _plain_addresses(value: str, defects: list[str]) -> list[Address] | None:
    """The common case, `a@x, Name <b@y>` with no quotes, comments, groups or encoded words,
    read without the full RFC 5322 parser (a third of the parse time otherwise); None when
    the value needs the full parser."""
    found = []
    for item in value.split(","):
        if not item.strip():
            continue
        match = _PLAIN_MAILBOX.fullmatch(item)
        if match is None:
            return None
        display, bracketed, bare = match.groups()
        address = bracketed or bare
        found.append(
            Address(
                name=" ".join((display or "").split()),
                address=address,
                ascii_domain=_ascii_domain(address.rpartition("@")[2], defects),
            )
        )
    return found


def parse_addresses(value: str, name: str, defects: list[str]) -> list[Address]:
    """The addresses in one address field: RFC 5322 syntax, encoded words in display names,
    UTF-8 (RFC 6532); groups flattened, empty addresses left out."""
    plain = _plain_addresses(value, defects)
    if plain is not None:
        return plain
    found: list[Address] = []
    try:
        header: Any = policy.default.header_factory("to", value)
        for address in header.addresses:
            spec = clean(address.addr_spec)
            if not spec or spec == "<>":
                continue
            found.append(
                Address(
                    name=clean(address.display_name),
                    address=spec,
                    ascii_domain=_ascii_domain(clean(address.domain), defects),
                )
            )
    except Exception:  # noqa: BLE001 -- the library parser failed: the lenient one takes over
        defects.append(f"header: {name} is not a valid address list")
        for display, spec in email.utils.getaddresses([value]):
            if spec:
                domain = spec.rpartition("@")[2] if "@" in spec else ""
                found.append(
                    Address(
                        name=clean(decode_words(display)),
                        address=clean(spec),
                        ascii_domain=_ascii_domain(domain, defects),
                    )
                )
    return found


def delivery_statuses(data: bytes) -> list[DeliveryStatus]:
    """The per-recipient groups of a message/delivery-status body (RFC 3464 2.3); the first
    group is about the message as a whole."""
    statuses = []
    for group in re.split(rb"\r?\n[ \t]*\r?\n", data.strip())[1:]:
        values: dict[str, str] = {}
        text = re.sub(r"\r?\n[ \t]+", " ", header_text(group))
        for line in text.splitlines():
            name, _, value = line.partition(":")
            values.setdefault(name.strip().lower(), value.strip())
        if not values.get("final-recipient"):
            continue
        statuses.append(
            DeliveryStatus(
                final_recipient=_untyped(values.get("final-recipient", "")),
                original_recipient=_untyped(values.get("original-recipient", "")),
                action=values.get("action", "").lower(),
                status=(values.get("status", "").split() or [""])[0],
                diagnostic_code=_untyped(values.get("diagnostic-code", "")),
                remote_mta=_untyped(values.get("remote-mta", "")),
            )
        )
    return statuses


def _untyped(value: str) -> str:
    """`rfc822; user@example.com` -> `user@example.com` (RFC 3464 address-type prefixes)."""
    return clean(value.split(";", 1)[1].strip() if ";" in value else value)


# ------------------------------------------------------------------------------ header only
# What the rule set needs before the full parse: the header section, via the standard library.


def parse_header_section(raw: bytes) -> EmailMessage:
    """Only the header section: what the rule set needs, at a fraction of a full parse. Only
    its bytes are read (the standard library's header-only parse still reads the body through),
    and the rule set's facts, its notifications and their header list share one parse of them:
    the message returned is for reading only."""
    return _parsed_header_section(raw[: header_block_end(raw)])


@functools.lru_cache(maxsize=4)
def _parsed_header_section(header_section: bytes) -> EmailMessage:
    message = _HEADER_PARSER.parsebytes(header_section, headersonly=True)
    assert isinstance(message, EmailMessage)
    return message


def header_values(message: Message, name: str) -> list[str]:
    values = []
    for value in message.get_all(name, []):
        try:
            values.append(clean(str(value)))
        except Exception:  # noqa: BLE001 -- a broken header is a defect, never a crash
            values.append("")
    return values


def addresses(message: Message, name: str, defects: list[str]) -> list[Address]:
    """The addresses of every `name` field of a header-only parse, read by the same parser as
    the full parse's (`parse_addresses`), from the raw field values."""
    found: list[Address] = []
    for field_name, value in message.raw_items():
        if field_name.lower() == name:
            raw = str(value).encode("utf-8", "surrogateescape")  # the bytes as received
            found.extend(parse_addresses(unfold(header_text(raw)), name, defects))
    return found
