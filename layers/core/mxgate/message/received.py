"""Received fields (RFC 5321 4.4, protocols of RFC 3848): the one format mxgate writes, and the
reading of one written by the ingress before it.

mxgate writes `from <HELO> ([<IP>]) by <host> with ESMTP[S] id <id>; <date>`: the connecting
address as an address literal in the TCP-info comment, where mailbox providers that skip
their gateways' hops (Gmail's "automatically detect external IP", Microsoft 365's Enhanced
Filtering) look for the next sender's address.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

_FROM = re.compile(
    r"^\s*from\s+(?P<helo>\S+)\s*\((?:[^()\[\]]*\s)?\[(?:IPv6:)?(?P<ip>[0-9A-Fa-f:.]+)\]",
    re.IGNORECASE,
)
_BY = re.compile(r"\bby\s+(?P<by>[^\s;()]+)", re.IGNORECASE)
_WITH = re.compile(r"\bwith\s+(?P<protocol>[A-Za-z0-9]+)", re.IGNORECASE)
_TLS_VERSION = re.compile(r"\bTLS(?:v|_)?1[._]?([0-3])\b", re.IGNORECASE)
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
    try:
        version = ipaddress.ip_address(ip).version
    except ValueError:
        return f"[{ip}]"
    return f"[IPv6:{ip}]" if version == 6 else f"[{ip}]"


def received_value(
    *,
    helo: str,
    ip: str,
    by: str,
    message_id: str,
    when: datetime,
    tls_protocol: str | None = None,
    authenticated: bool = False,
) -> str:
    protocol = "ESMTP" + ("S" if tls_protocol else "") + ("A" if authenticated else "")
    source = f"{helo or 'unknown'} ({address_literal(ip)})" if ip else (helo or "unknown")
    tls = f" (version={tls_protocol})" if tls_protocol else ""
    return f"from {source} by {by} with {protocol}{tls} id {message_id}; {format_datetime(when)}"


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
    protocol = _WITH.search(text, found.end())
    return ReceivedHop(
        helo=found["helo"],
        ip=ip,
        by=by["by"].lower() if by else "",
        protocol=protocol["protocol"] if protocol else "",
    )


def tls_version(value: str) -> str | None:
    """`TLS1_2` or `TLS1_3` as Mail Manager's conditions spell them, if the field names one."""
    found = _TLS_VERSION.search(_FOLD.sub(" ", value))
    return f"TLS1_{found[1]}" if found else None
