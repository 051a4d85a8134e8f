"""Authenticate one message: SPF for the envelope sender and HELO, every DKIM signature, and
DMARC over both. Reads the message once, as a stream."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import BinaryIO

from mxgate.authn.dkim import DkimVerifier
from mxgate.authn.dmarc import check_dmarc
from mxgate.authn.model import Authentication
from mxgate.authn.spf import check_helo, check_mail_from
from mxgate.message.parse import parse_addresses
from mxgate.message.text import header_text, unfold
from mxgate.ports import Resolver

_CHUNK = 1 << 16
MAX_HEADER_SECTION = 1 << 20


def split_header_section(stream: BinaryIO, limit: int = MAX_HEADER_SECTION) -> tuple[bytes, bytes]:
    """The header section (through its blank line) and the first bytes of the body. A header
    section larger than `limit` is cut there: what follows counts as body."""
    data = b""
    while True:
        if data.startswith((b"\r\n", b"\n")):
            cut = 2 if data.startswith(b"\r\n") else 1
            return data[:cut], data[cut:]
        ends = [i + len(s) for s in (b"\n\r\n", b"\n\n") if (i := data.find(s)) >= 0]
        if ends:
            cut = min(ends)
            return data[:cut], data[cut:]
        if len(data) > limit:
            return data[:limit], data[limit:]
        chunk = stream.read(_CHUNK)
        if not chunk:
            return data, b""
        data += chunk


def from_domains(header_section: bytes) -> list[str]:
    """The domains of the RFC 5322 From field(s), as DNS knows them."""
    domains = []
    for line in _fields(header_section):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"from":
            for address in parse_addresses(unfold(header_text(value)), "from", []):
                domains.append(address.ascii_domain)
    return domains


def _fields(header_section: bytes) -> Iterator[bytes]:
    field = b""
    for line in header_section.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and field:
            field += line
            continue
        if field:
            yield field
        field = line
    if field.strip():
        yield field


class Authenticator:
    """Checks senders through one resolver (cached, as the composition root builds it)."""

    def __init__(self, resolver: Resolver, authserv_id: str) -> None:
        self.resolver = resolver
        self.authserv_id = authserv_id

    def authenticate(
        self, message: BinaryIO, *, client_ip: str, mail_from: str, helo: str
    ) -> Authentication:
        header_section, body_start = split_header_section(message)
        verifier = DkimVerifier(header_section)
        if verifier.signed:
            verifier.feed(body_start)
            while chunk := message.read(_CHUNK):
                verifier.feed(chunk)
        dkim = verifier.results(self.resolver) if verifier.signed else []
        spf_mail_from = check_mail_from(self.resolver, client_ip, mail_from, helo)
        spf_helo = check_helo(self.resolver, client_ip, helo)
        dmarc = check_dmarc(
            self.resolver,
            from_domains(header_section),
            spf_mail_from,
            dkim,
            sampling_key=hashlib.sha256(header_section).hexdigest(),
        )
        return Authentication(
            authserv_id=self.authserv_id,
            spf_mail_from=spf_mail_from,
            spf_helo=spf_helo,
            dkim=dkim,
            dmarc=dmarc,
        )
