"""Received fields (RFC 5321 4.4, protocols of RFC 3848): the one format mxgate writes, and the
reading of one written by a hop before it.

mxgate writes, as Postfix does, `from <HELO> ([<IP>]) (using TLSv1.3 with cipher ...) by <host>
(<software>) with ESMTPSA id <id>; <date>`: the connecting address as an address literal in the
TCP-info comment, where mailbox providers that skip their gateways' hops (Gmail's
"automatically detect external IP", Microsoft 365's Enhanced Filtering) look for the sender's
address; `with` names the session as RFC 3848 registers it (`S` under STARTTLS, `A` after
SMTP AUTH).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime

_FROM = re.compile(
    r"^\s*from\s+(?P<helo>\S+)\s*\((?:[^()\[\]]*\s)?\[(?:IPv6:)?(?P<ip>[0-9A-Fa-f:.]+)\]",
    re.IGNORECASE,
)
_BY = re.compile(r"\bby\s+(?P<by>[^\s;()]+)", re.IGNORECASE)
_WITH = re.compile(r"\bwith\s+(?P<protocol>[A-Za-z0-9]+)", re.IGNORECASE)
_TLS_VERSION = re.compile(r"\bTLS(?:v|_)?1[._]?([0-3])\b", re.IGNORECASE)
_CIPHER = re.compile(r"\bwith cipher ([A-Za-z0-9_-]+)(?: \((\d+) bits\))?")
_FOLD = re.compile(r"\r?\n[ \t]+")


@dataclass(frozen=True, slots=True)
class ReceivedHop:
    """What one Received field says of the hop it records."""

    helo: str
    ip: str
    by: str
    protocol: str  # ESMTP, ESMTPS, ESMTPA, ESMTPSA, SMTP, ...

    @property
    def tls(self) -> bool:
        return self.protocol.upper() in {"ESMTPS", "ESMTPSA", "UTF8SMTPS", "UTF8SMTPSA"}


def address_literal(ip: str) -> str:
    """`[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 4.1.3)."""
    if ":" not in ip:  # no IPv6 address: an IPv4 one or not an address, `[ip]` either way
        return f"[{ip}]"
    try:
        version = ipaddress.ip_address(ip).version
    except ValueError:
        return f"[{ip}]"
    return f"[IPv6:{ip}]" if version == 6 else f"[{ip}]"


# Mail Manager's TLS_PROTOCOL values -> the names TLS libraries (and Received fields) use
_TLS_VERSIONS = {"TLS1_0": "TLSv1", "TLS1_1": "TLSv1.1", "TLS1_2": "TLSv1.2", "TLS1_3": "TLSv1.3"}


def protocol(*, tls: bool, authenticated: bool) -> str:
    """RFC 3848's name for the session."""
    return "ESMTP" + ("S" if tls else "") + ("A" if authenticated else "")


def tls_comment(
    tls_protocol: str | None, cipher: str | None = None, bits: int | None = None
) -> str:
    """` (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits))`, or nothing."""
    if not tls_protocol:
        return ""
    version = _TLS_VERSIONS.get(tls_protocol, tls_protocol)
    if not cipher:
        return f" (using {version})"
    size = f" ({bits} bits)" if bits else ""
    return f" (using {version} with cipher {cipher}{size})"


def received_value(
    *,
    helo: str,
    ip: str,
    by: str,
    message_id: str,
    when: datetime,
    tls_protocol: str | None = None,
    tls_cipher: str | None = None,
    tls_cipher_bits: int | None = None,
    authenticated: bool = False,
    software: str | None = None,
) -> str:
    source = f"{helo or 'unknown'} ({address_literal(ip)})" if ip else (helo or "unknown")
    tls = tls_comment(tls_protocol, tls_cipher, tls_cipher_bits)
    receiver = f"{by} ({software})" if software else by
    with_ = protocol(tls=bool(tls_protocol), authenticated=authenticated)
    return f"from {source}{tls} by {receiver} with {with_} id {message_id}; {_date(when)}"


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _date(when: datetime) -> str:
    """`format_datetime(when)`, written at once for a UTC time (every message's Received
    field: the standard library's takes a time tuple and a zone apart, 5x the time)."""
    if when.utcoffset() != timedelta(0):
        return format_datetime(when)
    return (
        f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year:04d} "
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} +0000"
    )


def read_received(value: str) -> ReceivedHop | None:
    """The hop a Received field records, when it names the sending address; else None."""
    text = _FOLD.sub(" ", value)
    found = _FROM.match(text)
    if found is None:
        return None
    try:
        ip = str(ipaddress.ip_address(found["ip"]))
    except ValueError:
        return None
    by = _BY.search(text, found.end())
    protocol = _WITH.search(text, by.end() if by else found.end())  # not a TLS comment's "with"
    return ReceivedHop(
        helo=found["helo"],
        ip=ip,
        by=by["by"].lower() if by else "",
        protocol=protocol["protocol"] if protocol else "",
    )


@dataclass(frozen=True, slots=True)
class TlsSession:
    protocol: str  # TLS1_2, TLS1_3 as Mail Manager's conditions spell them; "TLS": not named
    cipher: str | None = None
    bits: int | None = None


def tls_session(value: str) -> TlsSession:
    """What a Received field of a session under TLS says of it."""
    text = _FOLD.sub(" ", value)
    version = _TLS_VERSION.search(text)
    cipher = _CIPHER.search(text)
    return TlsSession(
        protocol=f"TLS1_{version[1]}" if version else "TLS",
        cipher=cipher[1] if cipher else None,
        bits=int(cipher[2]) if cipher and cipher[2] else None,
    )
