"""Build the rule set's MessageFacts from an envelope and the raw message (headers only)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from email.message import EmailMessage

from mxgate.authn.model import Authentication
from mxgate.mailmanager.facts import MessageFacts
from mxgate.message.parse import addresses, header_values, parse_header_section
from mxgate.message.raw import RawMessage
from mxgate.records import Envelope


class HeaderMap(Mapping[str, Sequence[str]]):
    """Decoded header values by lower-case name, decoded only when a rule asks."""

    def __init__(self, message: EmailMessage) -> None:
        self._message = message
        self._cache: dict[str, Sequence[str]] = {}

    def __getitem__(self, name: str) -> Sequence[str]:
        if name not in self._cache:
            self._cache[name] = tuple(header_values(self._message, name))
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k.lower() for k in self._message))

    def __len__(self) -> int:
        return len({k.lower() for k in self._message})


def message_facts(
    envelope: Envelope, raw: RawMessage, authentication: Authentication | None = None
) -> MessageFacts:
    message = parse_header_section(raw.header)
    verdicts = authentication.verdicts if authentication is not None else None
    defects: list[str] = []

    def listed(name: str) -> tuple[str, ...]:
        return tuple(a.address for a in addresses(message, name, defects))

    facts = MessageFacts(
        mail_from=envelope.mail_from,
        helo=envelope.helo,
        source_ip=envelope.source_ip,
        size=raw.size,
        tls=envelope.tls_protocol is not None,
        tls_wrapped=False,  # Mail Manager ingress speaks STARTTLS only, never implicit TLS
        subject=next(iter(header_values(message, "subject")), ""),
        from_addresses=listed("from"),
        sender_addresses=listed("sender"),
        to_addresses=listed("to"),
        cc_addresses=listed("cc"),
        raw_headers=HeaderMap(message),
        read_receipt_requested="disposition-notification-to" in message,
    )
    if verdicts is None:  # not checked: the facts' defaults say PROCESSING_FAILED
        return facts
    return replace(facts, spf=verdicts.spf, dkim=verdicts.dkim, dmarc_policy=verdicts.dmarc_policy)
