"""The `Received` trace field the gateway prepends to each mailbox delivery (RFC 5321 4.4).

Its `with` clause names the protocol as RFC 3848 registers it: `ESMTPS` for a session under
STARTTLS, `ESMTPA` after SMTP AUTH, `ESMTPSA` for both; and, as Postfix and Exim write it,
a comment with the TLS version and cipher."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime

from mxgate.records import Envelope

HEADER = "Received"
# Mail Manager's TLS_PROTOCOL values -> the names TLS libraries (and Received fields) use
_TLS_VERSIONS = {"TLS1_0": "TLSv1", "TLS1_1": "TLSv1.1", "TLS1_2": "TLSv1.2", "TLS1_3": "TLSv1.3"}


def protocol(envelope: Envelope) -> str:
    """RFC 3848's name for the session the message came in on."""
    return (
        "ESMTP" + ("S" if envelope.tls_protocol else "") + ("A" if envelope.authenticated else "")
    )


def tls_comment(envelope: Envelope) -> str:
    """` (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits))`, or nothing."""
    if not envelope.tls_protocol:
        return ""
    version = _TLS_VERSIONS.get(envelope.tls_protocol, envelope.tls_protocol)
    if not envelope.tls_cipher:
        return f" (using {version})"
    bits = f" ({envelope.tls_cipher_bits} bits)" if envelope.tls_cipher_bits else ""
    return f" (using {version} with cipher {envelope.tls_cipher}{bits})"


def received_value(envelope: Envelope, by: str, message_id: str, when: datetime) -> str:
    return (
        f"from {envelope.helo or 'unknown'} ({envelope.source_ip or 'unknown'})"
        f"{tls_comment(envelope)} by {by} (mxgate) with {protocol(envelope)} id {message_id}; "
        f"{format_datetime(when)}"
    )
