"""What `mxgate sandbox send` reports for each envelope recipient: its terminal state on the
stack's timeline and, for a delivery, what the mailbox host got, with the hops as the provider
sees them: the Received fields, the sender's address a provider finds by skipping the
gateway's own addresses (Gmail's inbound gateway with "automatically detect external IP",
365's Enhanced Filtering with the addresses listed), and how SPF, DKIM and DMARC come out
there."""

from __future__ import annotations

import io
from collections.abc import Collection, Sequence

from pydantic import BaseModel, Field

from mxgate.authn.check import Authenticator
from mxgate.message.headers import header_block_end
from mxgate.message.parse import header_values, parse_header_section
from mxgate.message.received import ReceivedHop, read_received
from mxgate.sandbox.mailboxes import MailboxDelivery


class Hop(BaseModel):
    from_ip: str
    helo: str
    by: str
    protocol: str


class ProviderView(BaseModel):
    """The mailbox provider's view, gateway addresses listed (its inbound gateway / Enhanced
    Filtering skip list) and not."""

    connecting_ip: str
    gateway_addresses: list[str]
    sender_ip: str | None  # the first hop's address that is not a listed gateway address
    sender_ip_skipping_last_hop_only: str | None  # 365's "skip the last IP" setting
    spf: str  # SPF as the provider evaluates it, for `sender_ip` and MAIL FROM
    dkim: list[str]  # each signature: "pass d=example.com", ...
    dmarc: str


class RecipientReport(BaseModel):
    recipient: str
    outcome: str  # a terminal state, or `refused` (at RCPT) or `pending`
    route: str = ""
    detail: str = ""
    # a delivery: the envelope the mailbox host saw, and the stored file
    mail_from: str | None = None
    rcpt_to: list[str] | None = None
    path: str | None = None
    mailbox_host: str | None = None
    received: list[Hop] | None = None
    provider: ProviderView | None = None


class SendReport(BaseModel):
    message_id: str
    recipients: list[RecipientReport] = Field(default_factory=list)


def hops_of(raw: bytes) -> list[ReceivedHop]:
    """The Received fields of a stored message, newest (the provider's own) first."""
    header = parse_header_section(raw[: header_block_end(raw)])
    return [hop for value in header_values(header, "received") if (hop := read_received(value))]


def sender_ip(hops: Sequence[ReceivedHop], gateway: Collection[str]) -> str | None:
    """Walk the Received fields from the top and take the first sending address that is not a
    listed gateway address: how providers find the original sender behind a gateway."""
    return next((hop.ip for hop in hops if hop.ip not in gateway), None)


def provider_view(
    delivery: MailboxDelivery,
    raw: bytes,
    gateway: Collection[str],
    authenticator: Authenticator,
) -> tuple[list[Hop], ProviderView]:
    hops = hops_of(raw)
    found = sender_ip(hops, gateway)
    helo = next((h.helo for h in hops if h.ip == found), "")
    checked = authenticator.authenticate(
        io.BytesIO(raw), client_ip=found or "", mail_from=delivery.mail_from, helo=helo
    )
    view = ProviderView(
        connecting_ip=delivery.peer_ip,
        gateway_addresses=sorted(gateway),
        sender_ip=found,
        sender_ip_skipping_last_hop_only=hops[1].ip if len(hops) > 1 else None,
        spf=checked.spf_mail_from.result.value,
        dkim=[f"{c.result.value} d={c.domain}" for c in checked.dkim],
        dmarc=checked.dmarc.result.value,
    )
    return [Hop(from_ip=h.ip, helo=h.helo, by=h.by, protocol=h.protocol) for h in hops], view
