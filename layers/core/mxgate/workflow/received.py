"""The `Received` trace field the gateway prepends to each mailbox delivery: the session the
envelope records, in the one format of mxgate.message.received."""

from __future__ import annotations

from datetime import datetime

from mxgate.message import received
from mxgate.records import Envelope

HEADER = "Received"


def received_value(
    envelope: Envelope, by: str, message_id: str, when: datetime, software: str | None = "mxgate"
) -> str:
    return received.received_value(
        helo=envelope.helo,
        ip=envelope.source_ip,
        by=by,
        message_id=message_id,
        when=when,
        tls_protocol=envelope.tls_protocol,
        tls_cipher=envelope.tls_cipher,
        tls_cipher_bits=envelope.tls_cipher_bits,
        authenticated=envelope.authenticated,
        software=software,
    )
