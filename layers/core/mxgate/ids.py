"""Message identifiers: sortable by time (ULID layout), unique without coordination."""

from __future__ import annotations

import os
from datetime import datetime

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two characters for each 10 bits: 13 look-ups an id rather than 26 divisions of a 128-bit int
_PAIRS = tuple(high + low for high in _CROCKFORD for low in _CROCKFORD)
_SHIFTS = tuple(range(120, -1, -10))


def new_message_id(now: datetime, randomness: int | None = None) -> str:
    """26 characters: 48 bits of milliseconds, then 80 random bits (the system's CSPRNG),
    Crockford base32."""
    millis = int(now.timestamp() * 1000)
    random = int.from_bytes(os.urandom(10)) if randomness is None else randomness
    value = (millis << 80) | random
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])
