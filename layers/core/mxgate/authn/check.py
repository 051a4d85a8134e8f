"""Authenticate one message: SPF for the envelope sender and HELO, every DKIM signature, and
DMARC over both. Reads the message once, as a stream."""

from __future__ import annotations

import hashlib
from typing import BinaryIO

from mxgate.authn.dkim import DkimVerifier
from mxgate.authn.dmarc import check_dmarc
from mxgate.authn.model import Authentication
from mxgate.authn.spf import check_helo, check_mail_from
from mxgate.message.headers import header_fields, read_header_section
from mxgate.message.parse import parse_addresses
from mxgate.message.text import header_text, unfold
from mxgate.ports import Resolver

_CHUNK = 1 << 16


def from_domains(header_section: bytes) -> list[str]:
    """The domains of the RFC 5322 From field(s), as DNS knows them."""
    domains = []
    for name, start, end in header_fields(header_section):
        if name.lower() == b"from":
            value = header_section[start:end].partition(b":")[2]
            for address in parse_addresses(unfold(header_text(value)), "from", []):
                domains.append(address.ascii_domain)
    return domains


class Authenticator:
    """Checks senders through one resolver (cached, as the composition root builds it)."""

    def __init__(self, resolver: Resolver, authserv_id: str) -> None:
        self.resolver = resolver
        self.authserv_id = authserv_id

    def authenticate(
        self, message: BinaryIO, *, client_ip: str, mail_from: str, helo: str
    ) -> Authentication:
        header_section, body_start = read_header_section(message)
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
