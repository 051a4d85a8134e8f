"""Message identifiers: sortable by time (ULID layout), unique without coordination."""

from __future__ import annotations

import secrets
from datetime import datetime

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_message_id(now: datetime, randomness: int | None = None) -> str:
    """26 characters: 48 bits of milliseconds, then 80 random bits, Crockford base32."""
    millis = int(now.timestamp() * 1000)
    value = (millis << 80) | (secrets.randbits(80) if randomness is None else randomness)
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))
