"""The loop guard: a per-deployment secret token, and a hop limit. Pure.

A header that only says "this went through mxgate" cannot tell a loop from a forward: a user
of Workspace who forwards her mail to a colleague, or a group that re-delivers to its members,
sends a message back through the MX that went through the gateway once already, and it is new
mail. What makes a loop is that the message comes back *for a recipient it was already
delivered to*. So each mailbox delivery carries a token naming the message it delivered
(`X-Mxgate-Loop: <message id>.<mac>`), signed with the deployment's secret key, so no one
else can make one, and another deployment's tokens are ignored. When a message comes back
with a token, the timeline of the message the token names says to whom it was delivered: the
same recipient again is a loop, anyone else is a forward. A message gathers one token per pass
through the gateway, so a chain of forwards that ends where it began (alice forwards to bob,
bob to alice) is caught too.

The token proves nothing about mail that never had one (relayed by the rule set itself, or
looping through another system): the hop limit catches the rest, as Postfix's
`hopcount_limit` does, by counting the Received fields each relay adds.

A loop is bounced to the envelope sender (status 5.4.6, routing loop detected), never dropped
in silence.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

HEADER = "X-Mxgate-Loop"
HOP_LIMIT = 50  # Received fields, as Postfix's hopcount_limit
LOOP_STATUS = "5.4.6"  # RFC 3463: routing loop detected
_MAC_BYTES = 10


def _mac(key: bytes, message_id: str) -> str:
    digest = hmac.new(key, f"mxgate-loop:{message_id}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:_MAC_BYTES]).decode("ascii").lower()


def loop_token(key: bytes, message_id: str) -> str:
    """The value of the field a delivery of `message_id` carries."""
    return f"{message_id}.{_mac(key, message_id)}"


def delivered_messages(values: Iterable[str], key: bytes) -> list[str]:
    """The message ids named by the tokens among `values` that this deployment signed (others,
    forged or another gateway's, are ignored), first seen first."""
    found: list[str] = []
    for value in values:
        message_id, dot, mac = value.strip().rpartition(".")
        signed = dot and message_id and hmac.compare_digest(mac.lower(), _mac(key, message_id))
        if signed and message_id not in found:
            found.append(message_id)
    return found


def hops(header_names: Iterable[str]) -> int:
    """Received fields in the header section: one per relay the message went through."""
    return sum(1 for name in header_names if name.casefold() == "received")


def too_many_hops(count: int, limit: int) -> str | None:
    """The bounce reason when the message went through more relays than the limit."""
    if count <= limit:
        return None
    return f"routing loop: {count} Received fields, more than the hop limit of {limit}"


def forwarding_loop(recipient: str, message_id: str) -> str:
    return (
        f"mail forwarding loop for {recipient}: the message came back to the gateway for a "
        f"recipient it was already delivered to (as message {message_id})"
    )
