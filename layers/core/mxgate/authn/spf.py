"""SPF (RFC 7208): is the connecting IP allowed to send for the MAIL FROM or HELO domain?

Written against the Resolver port, so the gateway's DNS configuration, its TTL cache and a test's
DNS server are what it asks, and a DNS failure stays `temperror`, never `none`.

Why our own evaluator and not pyspf behind the port, measured with `bench/spf_speed.py` (the
openspf RFC 7208 suite, then one check of an include + mx + ip4 record over warm answers, both
through the same CachingResolver and DNS server on loopback): this evaluator passes 203/203 and
takes about 40 µs a check; pyspf behind the port passes 202 (a CNAME loop in a PTR answer comes
back from the port as a DNS failure, which pyspf turns into temperror) and takes about 160 µs
(4x). pyspf also reaches DNS only through a module-level hook (`spf.DNSLookup`), which the
worker threads would share; here the port, its TTL cache and temperror-versus-none stay ours.
`tests/integration/test_spf_suite.py` runs the whole suite in `make test`.
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from collections.abc import Callable
from functools import lru_cache

from mxgate.authn.model import Result, SpfCheck
from mxgate.authn.spf_record import (
    Macro,
    Mechanism,
    SpfError,
    SpfRecord,
    Token,
    is_spf_record,
    macro_string,
    parse_record,
    permerror,
    valid_domain,
)
from mxgate.ports import DnsAnswer, DnsFailure, Resolver

MAX_LOOKUPS = 10  # RFC 7208 4.6.4: terms that cause DNS queries
MAX_VOID_LOOKUPS = 2  # RFC 7208 4.6.4: lookups that find nothing
MAX_NAMES = 10  # RFC 7208 4.6.4: MX exchanges, PTR names considered

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_URL_SAFE = "-._~"  # RFC 3986 unreserved, with the letters and digits quote() keeps anyway


# -- check_host() (RFC 7208 4)


class _Evaluation:
    """One check_host() run, with the lookup limits counted across includes and redirects."""

    def __init__(
        self, resolver: Resolver, ip: IpAddress, sender: str, helo: str, now: Callable[[], float]
    ) -> None:
        self.resolver = resolver
        self.ip = ip
        self.sender = sender
        self.helo = helo
        self.now = now
        self.lookups = 0
        self.void_lookups = 0
        self._validated: list[str] | None = None

    def _query(self, name: str, rrtype: str) -> DnsAnswer:
        try:
            return self.resolver.query(name, rrtype)
        except DnsFailure as error:
            raise SpfError(Result.TEMPERROR, f"DNS failure: {error}") from error

    def _count_lookup(self, term: str) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise permerror(f"more than {MAX_LOOKUPS} DNS lookups (at {term})")

    def _void(self) -> None:
        self.void_lookups += 1
        if self.void_lookups > MAX_VOID_LOOKUPS:
            raise permerror(f"more than {MAX_VOID_LOOKUPS} lookups found nothing")

    def _addresses(self, name: str) -> list[IpAddress]:
        answer = self._query(name, "A" if self.ip.version == 4 else "AAAA")
        found = []
        for record in answer.records:
            try:
                found.append(ipaddress.ip_address(record))
            except ValueError:
                continue
        return found

    def record(self, domain: str) -> SpfRecord | None:
        answer = self._query(domain, "TXT")
        records = [r for r in answer.records if is_spf_record(r)]
        if len(records) > 1:
            raise permerror(f"{domain} publishes {len(records)} SPF records")
        return parse_record(records[0]) if records else None

    def check_host(self, domain: str, *, explain: bool = True) -> tuple[Result, str, str]:
        """The result, why, and the domain's explanation of a fail (when `explain`)."""
        domain = domain.rstrip(".").lower()
        if not valid_domain(domain):
            return Result.NONE, f"{domain or 'no domain'} is not a domain SPF can check", ""
        record = self.record(domain)
        if record is None:
            return Result.NONE, f"no SPF record for {domain}", ""
        for mechanism in record.mechanisms:
            if self._matches(mechanism, domain):
                verb = "is permitted" if mechanism.qualifier is Result.PASS else "is not permitted"
                reason = f"{self.ip} {verb} by {domain} {mechanism.text}"
                explanation = ""
                if explain and mechanism.qualifier is Result.FAIL and record.explanation:
                    explanation = self._explanation(record.explanation, domain)
                return mechanism.qualifier, reason, explanation
        if record.redirect is not None:
            self._count_lookup("redirect")
            target = self.expand(record.redirect, domain)
            result, reason, explanation = self.check_host(target, explain=explain)
            if result is Result.NONE:
                raise permerror(f"redirect={target}: {reason}")
            return result, reason, explanation
        return Result.NEUTRAL, f"no mechanism of {domain} matched {self.ip}", ""

    def _matches(self, mechanism: Mechanism, domain: str) -> bool:
        name = mechanism.name
        if name == "all":
            return True
        if mechanism.network is not None:
            return mechanism.network.version == self.ip.version and self.ip in mechanism.network
        self._count_lookup(mechanism.text)
        target = self.expand(mechanism.domain, domain) if mechanism.domain else domain
        if name == "include":
            result, reason, _ = self.check_host(target, explain=False)
            if result is Result.TEMPERROR:
                raise SpfError(Result.TEMPERROR, f"include:{target}: {reason}")
            if result in (Result.PERMERROR, Result.NONE):
                raise permerror(f"include:{target} gave {result.value}: {reason}")
            return result is Result.PASS
        if name == "exists":
            answer = self._query(target, "A")  # A whatever the client's IP version
            if not answer.records:
                self._void()
            return bool(answer.records)
        if name == "a":
            addresses = self._addresses(target)
            if not addresses:
                self._void()
            return self._in_any(addresses, mechanism)
        if name == "mx":
            return self._mx_matches(target, mechanism)
        target = target.lower()  # ptr: names compare without regard to case
        return any(n == target or n.endswith(f".{target}") for n in self._validated_names())

    def _in_any(self, addresses: list[IpAddress], mechanism: Mechanism) -> bool:
        prefix = mechanism.cidr4 if self.ip.version == 4 else mechanism.cidr6
        shift = self.ip.max_prefixlen - prefix
        ip = int(self.ip) >> shift
        return any(
            int(address) >> shift == ip
            for address in addresses
            if address.version == self.ip.version
        )

    def _mx_matches(self, target: str, mechanism: Mechanism) -> bool:
        answer = self._query(target, "MX")
        if not answer.records:
            self._void()
            return False
        if len(answer.records) > MAX_NAMES:
            raise permerror(f"{target} has more than {MAX_NAMES} MX records")
        return any(
            self._in_any(self._addresses(exchange), mechanism)
            for exchange in answer.records
            if exchange not in ("", ".")
        )

    def _validated_names(self) -> list[str]:
        """PTR names of the IP whose own addresses include it (RFC 7208 5.5); a DNS error on
        the way only leaves names out."""
        if self._validated is None:
            try:
                names = self.resolver.query(str(self.ip), "PTR").records[:MAX_NAMES]
            except DnsFailure:
                names = ()
            self._validated = []
            for name in names:
                try:
                    if self.ip in self._addresses(name):
                        self._validated.append(name.lower().rstrip("."))
                except SpfError:
                    continue
        return self._validated

    def _explanation(self, spec: tuple[Token, ...], domain: str) -> str:
        """RFC 7208 6.2: the exp= text, or nothing when anything about it goes wrong."""
        try:
            answer = self.resolver.query(self.expand(spec, domain), "TXT")
            if len(answer.records) != 1 or not answer.records[0].isascii():
                return ""
            text = macro_string(answer.records[0], explanation=True)
            return self.expand(text, domain, explanation=True)
        except (DnsFailure, SpfError):
            return ""

    # -- macros (RFC 7208 7.3, 7.4)

    def expand(self, tokens: tuple[Token, ...], domain: str, *, explanation: bool = False) -> str:
        out = []
        for token in tokens:
            if isinstance(token, str):
                out.append(token)
            elif token.delimiters == "escape":
                out.append({"%": "%", "_": " ", "-": "%20"}[token.letter])
            else:
                out.append(self._macro(token, domain))
        expanded = "".join(out)
        if explanation:
            return expanded
        expanded = expanded.rstrip(".")
        while len(expanded) > 253 and "." in expanded:  # RFC 7208 7.3: drop labels on the left
            expanded = expanded.split(".", 1)[1]
        return expanded

    def _macro(self, macro: Macro, domain: str) -> str:
        value = self._macro_value(macro.letter.lower(), domain)
        parts = re.split("[" + re.escape(macro.delimiters) + "]", value)
        if macro.reverse:
            parts.reverse()
        if macro.keep is not None:
            parts = parts[-macro.keep :]
        expanded = ".".join(parts)
        return urllib.parse.quote(expanded, safe=_URL_SAFE) if macro.letter.isupper() else expanded

    def _macro_value(self, letter: str, domain: str) -> str:  # noqa: PLR0911 -- one per letter
        local, _, sender_domain = self.sender.rpartition("@")
        if letter == "s":
            return self.sender
        if letter == "l":
            return local or "postmaster"
        if letter == "o":
            return sender_domain
        if letter == "d":
            return domain
        if letter == "i":
            if self.ip.version == 4:
                return str(self.ip)
            # nibbles in upper case, as pyspf writes them (the suite's v-macro-ip6 expects it)
            return ".".join(self.ip.exploded.replace(":", "").upper())
        if letter == "v":
            return "in-addr" if self.ip.version == 4 else "ip6"
        if letter == "h":
            return self.helo
        if letter == "c":
            return str(self.ip)
        if letter == "r":
            return "unknown"  # the receiving host's name is not ours to tell senders
        if letter == "t":
            return str(int(self.now()))
        names = self._validated_names()  # p: a validated name of the IP, the domain's first
        suffix = [n for n in names if n == domain or n.endswith(f".{domain}")]
        return (suffix or names or ["unknown"])[0]


@lru_cache(maxsize=1024)  # two checks a message, and the same clients again and again
def client_address(ip: str) -> IpAddress | None:
    """The client's IP; an IPv4-mapped IPv6 address counts as IPv4 (RFC 7208 5)."""
    try:
        address = ipaddress.ip_address(ip.strip().strip("[]").removeprefix("IPv6:"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def check_host(
    resolver: Resolver,
    ip: str,
    domain: str,
    sender: str,
    helo: str,
    *,
    now: Callable[[], float] = time.time,
) -> tuple[Result, str, str]:
    """RFC 7208 check_host(): the result, why, and the domain's explanation of a fail."""
    address = client_address(ip)
    if address is None:
        return Result.NONE, "the connecting IP is not known", ""
    evaluation = _Evaluation(resolver, address, sender, helo, now)
    try:
        return evaluation.check_host(domain)
    except SpfError as error:
        return error.result, error.reason, ""


def _check(
    resolver: Resolver, identity: str, ip: str, *, domain: str, sender: str, helo: str
) -> SpfCheck:
    result, reason, explanation = check_host(resolver, ip, domain, sender, helo)
    return SpfCheck(
        identity="mailfrom" if identity == "mailfrom" else "helo",
        domain=domain.lower(),
        sender=sender,
        result=result,
        reason=reason,
        explanation=explanation,
    )


def check_mail_from(resolver: Resolver, ip: str, mail_from: str, helo: str) -> SpfCheck:
    """SPF for the envelope sender; a null sender (bounces) is checked as postmaster@HELO."""
    local, _, domain = mail_from.strip().strip("<>").rpartition("@")
    if not domain:
        domain = helo.strip()
        sender = f"postmaster@{domain}"
    else:
        sender = f"{local or 'postmaster'}@{domain}"
    return _check(resolver, "mailfrom", ip, domain=domain, sender=sender, helo=helo)


def check_helo(resolver: Resolver, ip: str, helo: str) -> SpfCheck:
    domain = helo.strip()
    return _check(resolver, "helo", ip, domain=domain, sender=f"postmaster@{domain}", helo=helo)
