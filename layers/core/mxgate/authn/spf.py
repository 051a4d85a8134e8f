"""SPF (RFC 7208): is the connecting IP allowed to send for the MAIL FROM or HELO domain?

Written against the Resolver port, so the gateway's DNS configuration, its cache and a test's
DNS server are what it asks. A DNS failure is `temperror`, never `none`.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

from mxgate.authn.model import Result, SpfCheck
from mxgate.ports import DnsAnswer, DnsFailure, Resolver

MAX_LOOKUPS = 10  # RFC 7208 4.6.4: terms that cause DNS queries
MAX_VOID_LOOKUPS = 2  # RFC 7208 4.6.4: lookups that find nothing
MAX_NAMES = 10  # MX exchanges, PTR names considered

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_QUALIFIERS = {"+": Result.PASS, "-": Result.FAIL, "~": Result.SOFTFAIL, "?": Result.NEUTRAL}
_MECHANISM = re.compile(r"([+\-~?]?)(all|include|a|mx|ptr|ip4|ip6|exists)(.*)", re.IGNORECASE)
_MODIFIER = re.compile(r"([a-zA-Z][a-zA-Z0-9_.\-]*)=(.*)")
_DUAL_CIDR = re.compile(r"(?::([^/]+))?(?:/(\d{1,2}))?(?://(\d{1,3}))?")
_MACRO_LETTERS = "slodiphv"  # c, r and t are for explanations only (RFC 7208 7.2)
_URL_SAFE = "-._~"


class SpfError(Exception):
    def __init__(self, result: Result, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


def _permerror(reason: str) -> SpfError:
    return SpfError(Result.PERMERROR, reason)


@dataclass(frozen=True, slots=True)
class _Mechanism:
    qualifier: Result
    name: str
    domain_spec: str | None = None
    network: str | None = None
    cidr4: int = 32
    cidr6: int = 128


@dataclass(frozen=True, slots=True)
class _Record:
    mechanisms: tuple[_Mechanism, ...]
    redirect: str | None


def valid_domain(domain: str) -> bool:
    """RFC 7208 4.3: a fully qualified name of sane labels, or nothing to check."""
    labels = domain.rstrip(".").split(".")
    return (
        len(labels) >= 2
        and len(domain) <= 253
        and all(0 < len(label) <= 63 for label in labels)
        and not domain.startswith("[")
    )


def parse_record(text: str) -> _Record:
    """The terms of one SPF record; any syntax error anywhere is a permerror (RFC 7208 4.6)."""
    terms = text.split()[1:]  # after "v=spf1"
    mechanisms: list[_Mechanism] = []
    redirect: str | None = None
    seen: set[str] = set()
    for term in terms:
        modifier = _MODIFIER.fullmatch(term)
        if modifier is None:
            mechanism = _MECHANISM.fullmatch(term)
            if mechanism is None:
                raise _permerror(f"invalid term {term!r}")
            mechanisms.append(_mechanism(mechanism, term))
            continue
        name = modifier.group(1).lower()
        if name in ("redirect", "exp"):
            if name in seen:
                raise _permerror(f"{name}= appears twice")
            seen.add(name)
            if not modifier.group(2):
                raise _permerror(f"{name}= without a domain")
            if name == "redirect":
                redirect = modifier.group(2)
        # unknown modifiers are ignored (RFC 7208 6)
    return _Record(tuple(mechanisms), redirect)


def _mechanism(match: re.Match[str], term: str) -> _Mechanism:
    qualifier = _QUALIFIERS[match.group(1) or "+"]
    name = match.group(2).lower()
    rest = match.group(3)
    if name == "all":
        if rest:
            raise _permerror(f"invalid term {term!r}")
        return _Mechanism(qualifier, name)
    if name in ("include", "exists"):
        if not rest.startswith(":") or len(rest) < 2:
            raise _permerror(f"{name} needs a domain: {term!r}")
        return _Mechanism(qualifier, name, domain_spec=rest[1:])
    if name in ("ip4", "ip6"):
        return _ip_mechanism(qualifier, name, rest, term)
    if name == "ptr":
        if rest and (not rest.startswith(":") or len(rest) < 2):
            raise _permerror(f"invalid term {term!r}")
        return _Mechanism(qualifier, name, domain_spec=rest[1:] or None)
    dual = _DUAL_CIDR.fullmatch(rest)  # a, mx
    if dual is None or (rest.startswith(":") and not dual.group(1)):
        raise _permerror(f"invalid term {term!r}")
    cidr4 = int(dual.group(2)) if dual.group(2) else 32
    cidr6 = int(dual.group(3)) if dual.group(3) else 128
    if cidr4 > 32 or cidr6 > 128:
        raise _permerror(f"invalid prefix length in {term!r}")
    return _Mechanism(qualifier, name, domain_spec=dual.group(1), cidr4=cidr4, cidr6=cidr6)


def _ip_mechanism(qualifier: Result, name: str, rest: str, term: str) -> _Mechanism:
    if not rest.startswith(":"):
        raise _permerror(f"{name} needs a network: {term!r}")
    try:
        network = ipaddress.ip_network(rest[1:], strict=False)
    except ValueError as error:
        raise _permerror(f"invalid network in {term!r}") from error
    if (name == "ip4") != (network.version == 4):
        raise _permerror(f"invalid network in {term!r}")
    return _Mechanism(qualifier, name, network=str(network))


class _Evaluation:
    """One check_host() run, with the lookup limits counted across includes and redirects."""

    def __init__(self, resolver: Resolver, ip: IpAddress, sender: str, helo: str) -> None:
        self.resolver = resolver
        self.ip = ip
        self.sender = sender
        self.helo = helo
        self.lookups = 0
        self.void_lookups = 0
        self._validated: str | None = None

    # -- DNS

    def _query(self, name: str, rrtype: str) -> DnsAnswer:
        try:
            return self.resolver.query(name, rrtype)
        except DnsFailure as error:
            raise SpfError(Result.TEMPERROR, f"DNS failure: {error}") from error

    def _count_lookup(self, term: str) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise _permerror(f"more than {MAX_LOOKUPS} DNS lookups (at {term})")

    def _addresses(self, name: str, *, count_void: bool) -> list[IpAddress]:
        rrtype = "A" if self.ip.version == 4 else "AAAA"
        answer = self._query(name, rrtype)
        if not answer.records and count_void:
            self._void()
        found = []
        for record in answer.records:
            try:
                found.append(ipaddress.ip_address(record))
            except ValueError:
                continue
        return found

    def _void(self) -> None:
        self.void_lookups += 1
        if self.void_lookups > MAX_VOID_LOOKUPS:
            raise _permerror(f"more than {MAX_VOID_LOOKUPS} lookups found nothing")

    # -- RFC 7208 4: check_host

    def check_host(self, domain: str) -> tuple[Result, str]:
        domain = domain.rstrip(".").lower()
        if not valid_domain(domain):
            return Result.NONE, f"{domain or 'no domain'} is not a domain SPF can check"
        answer = self._query(domain, "TXT")
        records = [r for r in answer.records if re.match(r"v=spf1(\s|$)", r, re.IGNORECASE)]
        if not records:
            return Result.NONE, f"no SPF record for {domain}"
        if len(records) > 1:
            raise _permerror(f"{domain} publishes {len(records)} SPF records")
        record = parse_record(records[0])
        for mechanism in record.mechanisms:
            if self._matches(mechanism, domain):
                term = _term_text(mechanism)
                verb = "is permitted" if mechanism.qualifier is Result.PASS else "is not permitted"
                return mechanism.qualifier, f"{self.ip} {verb} by {domain} {term}"
        if record.redirect is not None:
            self._count_lookup("redirect")
            target = self.expand(record.redirect, domain)
            result, reason = self.check_host(target)
            if result is Result.NONE:
                raise _permerror(f"redirect={target} has no SPF record")
            return result, reason
        return Result.NEUTRAL, f"no mechanism of {domain} matched {self.ip}"

    def _matches(self, mechanism: _Mechanism, domain: str) -> bool:
        name = mechanism.name
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            assert mechanism.network is not None
            network = ipaddress.ip_network(mechanism.network)
            return network.version == self.ip.version and self.ip in network
        self._count_lookup(name)
        target = self.expand(mechanism.domain_spec, domain) if mechanism.domain_spec else domain
        if name == "include":
            result, _ = self.check_host(target)
            if result is Result.PASS:
                return True
            if result is Result.TEMPERROR:
                raise SpfError(Result.TEMPERROR, f"include:{target}: DNS failure")
            if result in (Result.PERMERROR, Result.NONE):
                raise _permerror(f"include:{target} gave {result.value}")
            return False
        if name == "exists":
            answer = self._query(target, "A")
            if not answer.records:
                self._void()
            return bool(answer.records)
        if name == "a":
            return self._in_any(self._addresses(target, count_void=True), mechanism)
        if name == "mx":
            return self._mx_matches(target, mechanism)
        return self._ptr_matches(target)

    def _in_any(self, addresses: list[IpAddress], mechanism: _Mechanism) -> bool:
        prefix = mechanism.cidr4 if self.ip.version == 4 else mechanism.cidr6
        return any(
            self.ip in ipaddress.ip_network(f"{address}/{prefix}", strict=False)
            for address in addresses
            if address.version == self.ip.version
        )

    def _mx_matches(self, target: str, mechanism: _Mechanism) -> bool:
        answer = self._query(target, "MX")
        if not answer.records:
            self._void()
            return False
        if len(answer.records) > MAX_NAMES:
            raise _permerror(f"{target} has more than {MAX_NAMES} MX records")
        return any(
            self._in_any(self._addresses(exchange, count_void=False), mechanism)
            for exchange in answer.records
            if exchange not in ("", ".")
        )

    def _validated_names(self) -> list[str]:
        """PTR names of the IP whose own addresses include it (RFC 7208 5.5)."""
        try:
            names = self.resolver.query(str(self.ip), "PTR").records[:MAX_NAMES]
        except DnsFailure:
            return []
        validated = []
        for name in names:
            try:
                if self.ip in self._addresses(name, count_void=False):
                    validated.append(name.lower().rstrip("."))
            except SpfError:
                continue
        return validated

    def _ptr_matches(self, target: str) -> bool:
        target = target.lower()
        return any(
            name == target or name.endswith(f".{target}") for name in self._validated_names()
        )

    # -- macros (RFC 7208 7)

    def expand(self, spec: str, domain: str) -> str:
        out = []
        index = 0
        while index < len(spec):
            char = spec[index]
            if char != "%":
                out.append(char)
                index += 1
                continue
            following = spec[index + 1 : index + 2]
            if following == "%":
                out.append("%")
            elif following == "_":
                out.append(" ")
            elif following == "-":
                out.append("%20")
            elif following == "{":
                end = spec.find("}", index)
                if end < 0:
                    raise _permerror(f"unterminated macro in {spec!r}")
                out.append(self._macro(spec[index + 2 : end], domain))
                index = end + 1
                continue
            else:
                raise _permerror(f"invalid macro in {spec!r}")
            index += 2
        expanded = "".join(out).rstrip(".")
        while len(expanded) > 253 and "." in expanded:  # RFC 7208 7.3: drop labels on the left
            expanded = expanded.split(".", 1)[1]
        return expanded

    def _macro(self, body: str, domain: str) -> str:
        match = re.fullmatch(r"([a-zA-Z])(\d*)(r?)([.\-+,/_=]*)", body)
        if match is None or match.group(1).lower() not in _MACRO_LETTERS:
            raise _permerror(f"invalid macro %{{{body}}}")
        letter = match.group(1)
        value = self._macro_value(letter.lower(), domain)
        delimiters = match.group(4) or "."
        parts = re.split("[" + re.escape(delimiters) + "]", value)
        if match.group(3):
            parts.reverse()
        if match.group(2):
            keep = int(match.group(2))
            if keep == 0:
                raise _permerror(f"invalid macro %{{{body}}}")
            parts = parts[-keep:]
        expanded = ".".join(parts)
        return urllib.parse.quote(expanded, safe=_URL_SAFE) if letter.isupper() else expanded

    def _macro_value(self, letter: str, domain: str) -> str:
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
            return ".".join(self.ip.exploded.replace(":", ""))
        if letter == "v":
            return "in-addr" if self.ip.version == 4 else "ip6"
        if letter == "h":
            return self.helo
        if self._validated is None:  # p: a validated name of the IP (RFC 7208 7.3)
            names = self._validated_names()
            suffix = [n for n in names if n == domain or n.endswith(f".{domain}")]
            self._validated = (suffix or names or ["unknown"])[0]
        return self._validated


def _term_text(mechanism: _Mechanism) -> str:
    qualifier = {Result.PASS: "", Result.FAIL: "-", Result.SOFTFAIL: "~", Result.NEUTRAL: "?"}
    text = qualifier.get(mechanism.qualifier, "") + mechanism.name
    if mechanism.network:
        text += f":{mechanism.network}"
    elif mechanism.domain_spec:
        text += f":{mechanism.domain_spec}"
    return text


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
    resolver: Resolver, ip: str, domain: str, sender: str, helo: str
) -> tuple[Result, str]:
    """RFC 7208 check_host(): the result and why."""
    address = client_address(ip)
    if address is None:
        return Result.NONE, "the connecting IP is not known"
    evaluation = _Evaluation(resolver, address, sender, helo)
    try:
        return evaluation.check_host(domain)
    except SpfError as error:
        return error.result, error.reason


def check_mail_from(resolver: Resolver, ip: str, mail_from: str, helo: str) -> SpfCheck:
    """SPF for the envelope sender; a null sender (bounces) is checked as postmaster@HELO."""
    local, _, domain = mail_from.strip().strip("<>").rpartition("@")
    if not domain:
        domain = helo.strip().lower()
        sender = f"postmaster@{domain}"
    else:
        sender = f"{local or 'postmaster'}@{domain}"
    result, reason = check_host(resolver, ip, domain, sender, helo)
    return SpfCheck(
        identity="mailfrom", domain=domain.lower(), sender=sender, result=result, reason=reason
    )


def check_helo(resolver: Resolver, ip: str, helo: str) -> SpfCheck:
    domain = helo.strip().lower()
    sender = f"postmaster@{domain}"
    result, reason = check_host(resolver, ip, domain, sender, helo)
    return SpfCheck(identity="helo", domain=domain, sender=sender, result=result, reason=reason)
