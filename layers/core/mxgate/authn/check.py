"""Authenticate one message: SPF for the envelope sender and HELO, every DKIM signature, DMARC
over both, and the ARC chain. Reads the message once, as a stream."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import BinaryIO, Generic, TypeVar

from mxgate.authn.arc import ArcVerifier, Sealer, seal
from mxgate.authn.canonical import BodyHashes, Field, HeaderSectionError, verifier_fields
from mxgate.authn.dkim import DkimVerifier, unreadable_signatures
from mxgate.authn.dmarc import check_dmarc
from mxgate.authn.model import ArcCheck, Authentication, DkimCheck, DmarcCheck, Result, SpfCheck
from mxgate.authn.resolver import CachingResolver
from mxgate.authn.results import HEADER as RESULTS_HEADER
from mxgate.authn.results import authentication_results
from mxgate.authn.spf import check_helo, check_mail_from
from mxgate.clock import SystemClock
from mxgate.message.headers import header_fields, read_header_section
from mxgate.message.parse import parse_addresses
from mxgate.message.text import header_text, unfold
from mxgate.ports import Clock, DnsAnswer, DnsFailure, Resolver

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


@dataclass
class Signatures:
    """What one pass over a message found of its signatures."""

    header_section: bytes
    fields: list[Field]
    dkim: list[DkimCheck]
    arc: ArcCheck
    seal_body_hash: bytes | None  # relaxed SHA-256 of the body, when a seal was asked for


def check_signatures(
    message: BinaryIO, resolver: Resolver, *, now: float, seal: bool = False
) -> Signatures:
    """Every DKIM signature and the ARC chain, the body streamed once for all their hashes."""
    header_section, body_start = read_header_section(message)
    hashes = BodyHashes()
    try:
        fields = verifier_fields(header_section)
    except HeaderSectionError as error:
        fields, unreadable = [], str(error)
    else:
        unreadable = ""
    dkim = DkimVerifier(fields, hashes, now=now)
    arc = ArcVerifier(fields, hashes)
    seal_hash = hashes.request(relaxed=True, hash_name=b"sha256", limit=None) if seal else None
    if hashes.wanted:
        hashes.feed(body_start)
        while chunk := message.read(_CHUNK):
            hashes.feed(chunk)
        hashes.end()
    dkim_checks = dkim.results(resolver)
    arc_check = arc.result(resolver)
    if unreadable:
        if b"dkim-signature" in header_section.lower():
            dkim_checks = [unreadable_signatures(unreadable)]
        if b"arc-seal" in header_section.lower():
            arc_check = ArcCheck(result=Result.FAIL, reason=f"unreadable header: {unreadable}")
    return Signatures(
        header_section=header_section,
        fields=fields,
        dkim=dkim_checks,
        arc=arc_check,
        seal_body_hash=seal_hash.digest() if seal_hash is not None else None,
    )


_Checked = tuple[str, str, str, str, str]  # message id, SHA-256, client IP, MAIL FROM, HELO
K = TypeVar("K")
V = TypeVar("V")
_Answers = tuple[tuple[str, str, DnsAnswer], ...]  # (name, type, answer) in the order asked
# what DMARC decides on: the From domains, SPF's domain and result, each DKIM signature's
_DmarcInputs = tuple[tuple[str, ...], str, Result, tuple[tuple[str, Result], ...]]


@dataclass
class _Answering:
    """The resolver a check asks through when its result may be reused: every answer given,
    in order. A check that met a DNS failure or read the clock (SPF's %{t}) is never reused."""

    resolver: Resolver
    answers: list[tuple[str, str, DnsAnswer]] = field(default_factory=list)
    reusable: bool = True

    def query(self, name: str, rrtype: str) -> DnsAnswer:
        try:
            answer = self.resolver.query(name, rrtype)
        except DnsFailure:
            self.reusable = False
            raise
        self.answers.append((name, rrtype, answer))
        return answer

    def now(self) -> float:
        self.reusable = False
        return time.time()


class _Reused(Generic[K, V]):
    """Results of checks by their inputs, each with the DNS answers it was decided on. One is
    given again only while the cache answers every one of its questions with the very answer
    (the same object) it had: evaluation is a function of its inputs and its answers, so a
    check run again now would ask the same questions and decide the same. An answer past its
    TTL is a new object, and the check runs again."""

    def __init__(self, resolver: CachingResolver, size: int) -> None:
        self.resolver = resolver
        self.size = size
        self._kept: OrderedDict[K, tuple[V, _Answers]] = OrderedDict()

    def get(self, key: K) -> V | None:
        found = self._kept.get(key)
        if found is None:
            return None
        result, answers = found
        try:
            same = all(self.resolver.query(n, t) is answer for n, t, answer in answers)
        except DnsFailure:
            same = False
        if not same:
            del self._kept[key]
            return None
        self._kept.move_to_end(key)
        return result

    def keep(self, key: K, result: V, asked: _Answering) -> None:
        if not asked.reusable:
            return
        self._kept[key] = (result, tuple(asked.answers))
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)


class Authenticator:
    """Checks senders through one resolver (cached, as the composition root builds it); with a
    sealer, also seals what it found as the gateway's ARC set.

    It keeps its last `remember` results by the message's ingress id and the envelope facts
    checked, so a message the rule set checked before the rules is not checked again by the
    Process step moments later on the same machine (its verdicts are about the message as
    received, not the fields our rules added). With a sealer, by the SHA-256 of the bytes
    too: the seal signs the header fields of the message it is delivered with."""

    def __init__(
        self,
        resolver: Resolver,
        authserv_id: str,
        *,
        clock: Clock | None = None,
        sealer: Sealer | None = None,
        remember: int = 0,
        reuse: int = 0,
    ) -> None:
        self.resolver = resolver
        self.authserv_id = authserv_id
        self.clock = clock or SystemClock()  # signature expiry (x=), the seal's t=
        self.sealer = sealer
        self.remember = remember
        self._checked: OrderedDict[_Checked, tuple[Authentication, Signatures]] = OrderedDict()
        # SPF and DMARC results by their inputs (`reuse` of each): the next message from the
        # same client, sender and From domain is decided on the same cached answers. Only over
        # a caching resolver, whose answers stay the same objects for their TTL.
        caching = resolver if reuse and isinstance(resolver, CachingResolver) else None
        self._spf: _Reused[tuple[str, str, str], tuple[SpfCheck, SpfCheck]] | None = (
            _Reused(caching, reuse) if caching is not None else None
        )
        self._dmarc: _Reused[_DmarcInputs, DmarcCheck] | None = (
            _Reused(caching, reuse) if caching is not None else None
        )

    def authenticate(
        self,
        message: BinaryIO,
        *,
        client_ip: str,
        mail_from: str,
        helo: str,
        message_id: str = "",
        sha256: str = "",
    ) -> Authentication:
        """`message_id`, `sha256`: the message's ingress id and digest, if known (`remember`)."""
        authentication, _ = self._remembered(
            message, client_ip, mail_from, helo, message_id, sha256
        )
        return authentication

    def trace_fields(
        self,
        message: BinaryIO,
        *,
        client_ip: str,
        mail_from: str,
        helo: str,
        message_id: str = "",
        sha256: str = "",
    ) -> tuple[Authentication, list[tuple[str, str]]]:
        """The results, and the fields to put on top of the message when it is delivered:
        the gateway's ARC set (with a sealer), then Authentication-Results (RFC 8601 5)."""
        authentication, signatures = self._remembered(
            message, client_ip, mail_from, helo, message_id, sha256
        )
        value = authentication_results(authentication)
        fields = [(RESULTS_HEADER, value)]
        if self.sealer is not None and signatures.seal_body_hash is not None:
            arc_set = seal(
                self.sealer,
                signatures.fields,
                authentication.arc,
                signatures.seal_body_hash,
                value,
                timestamp=int(self.clock.now().timestamp()),
            )
            fields = [(n.decode(), v.decode().strip()) for n, v in arc_set] + fields
        return authentication, fields

    def _remembered(  # noqa: PLR0917 -- what authenticate and trace_fields were given
        self,
        message: BinaryIO,
        client_ip: str,
        mail_from: str,
        helo: str,
        message_id: str,
        sha256: str,
    ) -> tuple[Authentication, Signatures]:
        """The results kept for this message and envelope, or those of a check now. The key
        (the one place it is made): without a sealer the digest does not matter; with one, a
        message of unknown digest is never kept."""
        if not self.remember or not message_id or (self.sealer is not None and not sha256):
            return self._authenticate(message, client_ip=client_ip, mail_from=mail_from, helo=helo)
        checked: _Checked = (
            message_id,
            sha256 if self.sealer is not None else "",
            client_ip,
            mail_from,
            helo,
        )
        found = self._checked.get(checked)
        if found is not None:
            return found
        result = self._authenticate(message, client_ip=client_ip, mail_from=mail_from, helo=helo)
        self._checked[checked] = result
        while len(self._checked) > self.remember:
            self._checked.popitem(last=False)
        return result

    def _authenticate(
        self, message: BinaryIO, *, client_ip: str, mail_from: str, helo: str
    ) -> tuple[Authentication, Signatures]:
        signatures = check_signatures(
            message,
            self.resolver,
            now=self.clock.now().timestamp(),
            seal=self.sealer is not None,  # the seal's body hash comes with the same pass
        )
        spf_mail_from, spf_helo = self._check_spf(client_ip, mail_from, helo)
        dmarc = self._check_dmarc(signatures, spf_mail_from)
        authentication = Authentication(
            authserv_id=self.authserv_id,
            spf_mail_from=spf_mail_from,
            spf_helo=spf_helo,
            dkim=signatures.dkim,
            dmarc=dmarc,
            arc=signatures.arc,
        )
        return authentication, signatures

    def _check_spf(self, client_ip: str, mail_from: str, helo: str) -> tuple[SpfCheck, SpfCheck]:
        """SPF for MAIL FROM and HELO, or the results the same inputs had on the same answers.
        A fail with the domain's explanation is not reused (the explanation may change)."""
        if self._spf is None:
            return (
                check_mail_from(self.resolver, client_ip, mail_from, helo),
                check_helo(self.resolver, client_ip, helo),
            )
        key = (client_ip, mail_from, helo)
        found = self._spf.get(key)
        if found is not None:
            return found
        asked = _Answering(self.resolver)
        checks = (
            check_mail_from(asked, client_ip, mail_from, helo, now=asked.now),
            check_helo(asked, client_ip, helo, now=asked.now),
        )
        if not any(check.explanation for check in checks):
            self._spf.keep(key, checks, asked)
        return checks

    def _check_dmarc(self, signatures: Signatures, spf: SpfCheck) -> DmarcCheck:
        """DMARC over the SPF and DKIM results, or the result the same inputs had on the same
        answers. Only a result that sampled nothing (pct=100) is reused: the sample is decided
        by the header section's digest, which is each message's own."""
        domains = from_domains(signatures.header_section)

        def sampling_key() -> str:
            return hashlib.sha256(signatures.header_section).hexdigest()

        if self._dmarc is None:
            return check_dmarc(
                self.resolver, domains, spf, signatures.dkim, sampling_key=sampling_key()
            )
        key: _DmarcInputs = (
            tuple(domains),
            spf.domain,
            spf.result,
            tuple((check.domain, check.result) for check in signatures.dkim),
        )
        found = self._dmarc.get(key)
        if found is not None:
            return found
        asked = _Answering(self.resolver)
        dmarc = check_dmarc(asked, domains, spf, signatures.dkim, sampling_key=sampling_key())
        if dmarc.pct >= 100:  # all of them: no message was sampled out
            self._dmarc.keep(key, dmarc, asked)
        return dmarc
