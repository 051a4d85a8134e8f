"""SPF records (RFC 7208 4.5, 5, 6, 7.1): the grammar, to the letter. A syntax error anywhere
in a record is a permerror, also in a term evaluation would never reach (RFC 7208 4.6)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

from mxgate.authn.model import Result

_QUALIFIERS = {"+": Result.PASS, "-": Result.FAIL, "~": Result.SOFTFAIL, "?": Result.NEUTRAL}
_MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.\-]*)=(.*)", re.DOTALL)
_DIRECTIVE = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9]*)(.*)", re.DOTALL)
_CIDR_SUFFIX = re.compile(r"(.*?)((?:/\d+)?(?://\d+)?)", re.DOTALL)
_CIDR4 = re.compile(r"0|[1-9]\d?")
_CIDR6 = re.compile(r"0|[1-9]\d{0,2}")
_QNUM = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]\d|\d)"
_IP4 = re.compile(rf"{_QNUM}\.{_QNUM}\.{_QNUM}\.{_QNUM}")
_MACRO = re.compile(r"([A-Za-z])(\d*)([rR]?)([.\-+,/_=]*)")
_TOPLABEL = r"(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9\-]*[A-Za-z0-9])"
_DOMAIN_END = re.compile(rf".*\.{_TOPLABEL}\.?", re.DOTALL)
_DOMAIN_LETTERS = frozenset("slodiphv")
_EXPLAIN_LETTERS = _DOMAIN_LETTERS | frozenset("crt")  # RFC 7208 7.2: c, r, t only in exp text


class SpfError(Exception):
    def __init__(self, result: Result, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


def permerror(reason: str) -> SpfError:
    return SpfError(Result.PERMERROR, reason)


# -- macro strings (RFC 7208 7.1)


@dataclass(frozen=True, slots=True)
class Macro:
    letter: str  # as written: upper case asks for URL escaping
    keep: int | None  # the DIGIT transformer: how many right-hand parts
    reverse: bool
    delimiters: str


Token = str | Macro


def macro_string(text: str, *, explanation: bool = False) -> tuple[Token, ...]:
    """The literals and macros of a macro-string (with spaces too, for explanation text)."""
    letters = _EXPLAIN_LETTERS if explanation else _DOMAIN_LETTERS
    tokens: list[Token] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char != "%":
            if not ("!" <= char <= "~" or (explanation and char == " ")):
                raise permerror(f"invalid character {char!r} in {text!r}")
            tokens.append(char)
            index += 1
            continue
        following = text[index + 1 : index + 2]
        escapes = {"%": "%", "_": " ", "-": "%20"}
        if following in escapes:
            tokens.append(Macro(following, None, reverse=False, delimiters="escape"))
            index += 2
            continue
        end = text.find("}", index)
        match = _MACRO.fullmatch(text[index + 2 : end]) if following == "{" and end > 0 else None
        if match is None or match.group(1).lower() not in letters:
            raise permerror(f"invalid macro in {text!r}")
        if match.group(2) and int(match.group(2)) == 0:
            raise permerror(f"a macro keeps no parts in {text!r}")  # RFC 7208 7.3: nonzero
        keep = int(match.group(2)) if match.group(2) else None
        tokens.append(Macro(match.group(1), keep, bool(match.group(3)), match.group(4) or "."))
        index = end + 1
    return tuple(tokens)


def _domain_spec(text: str) -> tuple[Token, ...]:
    """A domain-spec: a macro-string that ends in a macro or in "." and a top label."""
    tokens = macro_string(text)
    if not tokens:
        raise permerror("an empty domain")
    if isinstance(tokens[-1], Macro):
        return tokens
    tail = []
    for token in reversed(tokens):
        if isinstance(token, Macro):
            break
        tail.append(token)
    if _DOMAIN_END.fullmatch("".join(reversed(tail))) is None:
        raise permerror(f"{text!r} does not end in a domain's top label")
    return tokens


# -- records (RFC 7208 4.5, 5, 6)


@dataclass(frozen=True, slots=True)
class Mechanism:
    qualifier: Result
    name: str
    text: str  # the term as written, for the reason
    domain: tuple[Token, ...] | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    cidr4: int = 32
    cidr6: int = 128


@dataclass(frozen=True, slots=True)
class SpfRecord:
    mechanisms: tuple[Mechanism, ...]
    redirect: tuple[Token, ...] | None
    explanation: tuple[Token, ...] | None


def is_spf_record(text: str) -> bool:
    """RFC 7208 4.5: "v=spf1" in any case, then a space or the end."""
    return text[:6].lower() == "v=spf1" and (len(text) == 6 or text[6] == " ")


@lru_cache(maxsize=4096)
def parse_record(text: str) -> SpfRecord:
    """Every term of one record; a syntax error anywhere is a permerror (RFC 7208 4.6).
    Records are parsed once while they stay in the cache: the same senders' records come back
    all day."""
    bad = next((c for c in text if not " " <= c <= "~"), None)
    if bad is not None:
        raise permerror(f"the record holds {bad!r}: only 7-bit ASCII without controls is SPF")
    mechanisms: list[Mechanism] = []
    modifiers: dict[str, tuple[Token, ...]] = {}
    for term in text[6:].split(" "):
        if not term:
            continue
        modifier = _MODIFIER.fullmatch(term)
        if modifier is None:
            mechanisms.append(_directive(term))
            continue
        name, value = modifier.group(1).lower(), modifier.group(2)
        if name in ("redirect", "exp"):
            if name in modifiers:
                raise permerror(f"{name}= appears twice")
            modifiers[name] = _domain_spec(value)
        else:
            macro_string(value)  # RFC 7208 6: unknown modifiers are ignored, if well formed
    redirect = modifiers.get("redirect")
    if any(m.name == "all" for m in mechanisms):
        redirect = None  # RFC 7208 6.1: an "all" anywhere makes redirect= meaningless
    return SpfRecord(tuple(mechanisms), redirect, modifiers.get("exp"))


def _directive(term: str) -> Mechanism:
    match = _DIRECTIVE.fullmatch(term)
    if match is None or match.group(2).lower() not in _MECHANISMS:
        raise permerror(f"unknown term {term!r}")
    qualifier = _QUALIFIERS[match.group(1) or "+"]
    name, rest = match.group(2).lower(), match.group(3)
    if name == "all":
        if rest:
            raise permerror(f"invalid term {term!r}")
        return Mechanism(qualifier, name, term)
    if name in ("ip4", "ip6"):
        return _ip_mechanism(qualifier, name, rest, term)
    if name in ("include", "exists"):
        if not rest.startswith(":"):
            raise permerror(f"{name} needs a domain: {term!r}")
        return Mechanism(qualifier, name, term, domain=_domain_spec(rest[1:]))
    if name == "ptr":
        if rest and not rest.startswith(":"):
            raise permerror(f"invalid term {term!r}")
        return Mechanism(qualifier, name, term, domain=_domain_spec(rest[1:]) if rest else None)
    split = _CIDR_SUFFIX.fullmatch(rest)  # a, mx: [":" domain-spec] [dual-cidr-length]
    assert split is not None  # the pattern matches any text
    spec, cidr = split.group(1), split.group(2)
    if spec and not spec.startswith(":"):
        raise permerror(f"invalid term {term!r}")
    cidr4_text, _, cidr6_text = cidr.partition("//")
    cidr4 = _prefix(cidr4_text[1:], _CIDR4, 32, term) if cidr4_text else 32
    cidr6 = _prefix(cidr6_text, _CIDR6, 128, term) if cidr6_text else 128
    domain = _domain_spec(spec[1:]) if spec else None
    return Mechanism(qualifier, name, term, domain=domain, cidr4=cidr4, cidr6=cidr6)


def _prefix(text: str, syntax: re.Pattern[str], most: int, term: str) -> int:
    if syntax.fullmatch(text) is None or int(text) > most:
        raise permerror(f"invalid prefix length in {term!r}")
    return int(text)


def _ip_mechanism(qualifier: Result, name: str, rest: str, term: str) -> Mechanism:
    if not rest.startswith(":"):
        raise permerror(f"{name} needs a network: {term!r}")
    address, slash, length = rest[1:].partition("/")
    if name == "ip4":
        if _IP4.fullmatch(address) is None:
            raise permerror(f"invalid IPv4 network in {term!r}")
        prefix = _prefix(length, _CIDR4, 32, term) if slash else 32
    else:
        if "%" in address or "." in address.rpartition(":")[0]:
            raise permerror(f"invalid IPv6 network in {term!r}")  # no zone, no stray dots
        prefix = _prefix(length, _CIDR6, 128, term) if slash else 128
    try:
        network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    except ValueError as error:
        raise permerror(f"invalid network in {term!r}") from error
    if network.version != (4 if name == "ip4" else 6):
        raise permerror(f"invalid network in {term!r}")
    return Mechanism(qualifier, name, term, network=network)


def valid_domain(domain: str) -> bool:
    """RFC 7208 4.3: a fully qualified name of sane labels, or nothing to check."""
    labels = domain.rstrip(".").split(".")
    return (
        len(labels) >= 2
        and len(domain) <= 253
        and all(0 < len(label) <= 63 for label in labels)
        and not domain.startswith("[")
    )
