"""Build the rule set's MessageFacts from an envelope and the raw message (headers only)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from email.message import EmailMessage
from functools import partial

from mxgate.authn.model import Authentication
from mxgate.mailmanager.facts import MessageFacts
from mxgate.message.parse import (
    addresses,
    header_values,
    parse_addresses,
    parse_header_section,
)
from mxgate.message.raw import RawMessage
from mxgate.message.text import header_text, unfold
from mxgate.records import Envelope

# A field's first line as the standard library's parser takes it (`email.feedparser`'s
# headerRE, less its "From " and continuation cases, which `_fields` handles or declines).
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+):[ \t]*")
_ADDRESS_FIELDS = ("from", "sender", "to", "cc")


class HeaderMap(Mapping[str, Sequence[str]]):
    """Decoded header values by lower-case name, decoded (by the standard library, from the
    header section) only when a rule asks."""

    def __init__(self, header_section: bytes) -> None:
        self._header_section = header_section
        self._parsed: EmailMessage | None = None
        self._cache: dict[str, Sequence[str]] = {}

    @property
    def _message(self) -> EmailMessage:
        if self._parsed is None:
            self._parsed = parse_header_section(self._header_section)
        return self._parsed

    def __getitem__(self, name: str) -> Sequence[str]:
        if name not in self._cache:
            self._cache[name] = tuple(header_values(self._message, name))
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k.lower() for k in self._message))

    def __len__(self) -> int:
        return len({k.lower() for k in self._message})


def _fields(header_section: bytes) -> list[tuple[str, bytes]] | None:
    """(lower-case name, raw value) of each field, the value unfolded no further than the
    standard library's parser gives it (leading blanks and the last line break gone); None
    when a line is not plainly a field or its continuation (a bare CR, a line without a
    name, a folded first line, an mbox "From " line): the standard library decides then."""
    end = header_section.find(b"\n\r\n")
    lf = header_section.find(b"\n\n")
    if lf >= 0 and (end < 0 or lf < end):
        end = lf
    body = header_section if end < 0 else header_section[: end + 1]
    if body.count(b"\r") != body.count(b"\r\n"):
        return None
    found: list[tuple[str, list[bytes]]] = []
    for line in body.split(b"\n"):
        if not line:
            continue  # the split's last piece
        if line[:1] in (b" ", b"\t"):
            if not found:
                return None
            found[-1][1].append(b"\n" + line)
            continue
        match = _FIELD.match(line)
        if match is None:
            return None
        found.append((match.group(1).decode("ascii").lower(), [line[match.end() :]]))
    return [(name, b"".join(value).rstrip(b"\r")) for name, value in found]


def _plain_text(raw: bytes) -> str | None:
    """An ASCII value with no encoded word, unfolded: what the standard library's
    unstructured header makes of it; None for anything it would decode."""
    if not raw.isascii() or b"=?" in raw:
        return None
    return unfold(raw.decode("ascii"))


def _header_facts(header_section: bytes) -> tuple[str, dict[str, list[str]], set[str]]:
    """The subject, the address lists and the field names, read without the standard
    library's parser where the fields are plain (its parse is most of the facts' cost for
    the usual message); the same values either way."""
    defects: list[str] = []  # the rule set reads none
    fields = _fields(header_section)
    if fields is not None:
        subject: str | None = ""
        found = False
        listed: dict[str, list[str]] = {name: [] for name in _ADDRESS_FIELDS}
        for name, value in fields:
            if name in listed:
                text = unfold(header_text(value))
                listed[name].extend(a.address for a in parse_addresses(text, name, defects))
            elif name == "subject" and not found:
                subject, found = _plain_text(value), True
        if subject is not None:
            return subject, listed, {name for name, _ in fields}
    return library_header_facts(header_section)


def library_header_facts(header_section: bytes) -> tuple[str, dict[str, list[str]], set[str]]:
    """`_header_facts` through the standard library's header parse, for any field."""
    defects: list[str] = []
    message = parse_header_section(header_section)
    return (
        next(iter(header_values(message, "subject")), ""),
        {name: [a.address for a in addresses(message, name, defects)] for name in _ADDRESS_FIELDS},
        {name.lower() for name in message},
    )


def message_facts(
    envelope: Envelope, raw: RawMessage, authentication: Authentication | None = None
) -> MessageFacts:
    subject, listed, names = _header_facts(raw.header)
    facts = partial(  # one construction with the verdicts (a replace() copied all 15 fields)
        MessageFacts,
        mail_from=envelope.mail_from,
        helo=envelope.helo,
        source_ip=envelope.source_ip,
        size=raw.size,
        tls=envelope.tls_protocol is not None,
        tls_wrapped=False,  # Mail Manager ingress speaks STARTTLS only, never implicit TLS
        subject=subject,
        from_addresses=tuple(listed["from"]),
        sender_addresses=tuple(listed["sender"]),
        to_addresses=tuple(listed["to"]),
        cc_addresses=tuple(listed["cc"]),
        raw_headers=HeaderMap(raw.header),
        read_receipt_requested="disposition-notification-to" in names,
    )
    if authentication is None:  # not checked: the facts' defaults say PROCESSING_FAILED
        return facts()
    verdicts = authentication.verdicts
    return facts(spf=verdicts.spf, dkim=verdicts.dkim, dmarc_policy=verdicts.dmarc_policy)
