"""The what-if replay's runner: what is known of each stored message (the facts the rule set
sees, sender authentication and blocklists asked again now, the parse quarantine rules read),
then both configurations' decisions, compared."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Iterable, Mapping

from mxgate.authn.check import Authenticator
from mxgate.local.facts import message_facts
from mxgate.mailmanager.addons import AddonResult
from mxgate.mailmanager.addresses import AddressBook
from mxgate.mailmanager.dnsbl import DnsblAnalyzer
from mxgate.message.model import ParseLimits
from mxgate.message.parse import parse_message
from mxgate.message.raw import RawMessage
from mxgate.replay.decisions import Comparison, Configuration, Known, StoredMessage, decide
from mxgate.routing.quarantine import auth_verdicts, facts_of


class ReplayFacts:
    def __init__(
        self,
        *,
        authenticator: Authenticator | None,
        limits: ParseLimits,
        analyzers: Mapping[str, DnsblAnalyzer],
    ) -> None:
        self.authenticator = authenticator
        self.limits = limits
        self.analyzers = dict(analyzers)
        self._listed: dict[str, dict[str, AddonResult]] = {}  # by sender IP: asked once

    def addons(self, ip: str) -> dict[str, AddonResult]:
        if ip not in self._listed:
            self._listed[ip] = {name: a.analyze(ip) for name, a in self.analyzers.items()}
        return self._listed[ip]

    def known(self, message: StoredMessage) -> Known:
        envelope, raw = message.envelope, message.raw
        authentication = None
        if self.authenticator is not None:
            authentication = self.authenticator.authenticate(
                io.BytesIO(raw),
                client_ip=envelope.source_ip,
                mail_from=envelope.mail_from,
                helo=envelope.helo,
            )
        parsed = parse_message(raw, limits=self.limits)
        route_facts = (
            None
            if parsed.unreadable is not None
            else facts_of(parsed, auth_verdicts(authentication))
        )
        return Known(
            message=message,
            facts=message_facts(envelope, RawMessage.of(raw), authentication),
            route_facts=route_facts,
            addons=self.addons(envelope.source_ip),
        )


def run_replay(
    history: Iterable[StoredMessage],
    old: Configuration,
    new: Configuration,
    *,
    facts: ReplayFacts,
    book: AddressBook,
    progress: Callable[[int], None] = lambda _: None,
) -> Comparison:
    comparison = Comparison()
    for stored in history:
        known = facts.known(stored)
        message = dataclasses.replace(stored, subject=known.facts.subject)
        comparison.add(message, decide(old, known, book), decide(new, known, book))
        progress(comparison.messages)
    return comparison
