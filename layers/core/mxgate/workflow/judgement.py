"""What Process decides for each recipient of a message before routing it: a loop is bounced
(routing/loops.py), own-domain spoofing (routing/spoofing.py), an unknown address and the
routes' quarantine rules (routing/quarantine.py) hold it. The rules are pure; this module
gathers the facts they judge: the message, its sender checks, and for a message that carries
our loop token, the earlier deliveries that token names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mxgate.authn.model import Authentication
from mxgate.errors import TransientError
from mxgate.message.model import ParsedMessage
from mxgate.records import Envelope, Outcome
from mxgate.routing.classify import Route, RouteKind
from mxgate.routing.loops import HEADER as LOOP_HEADER
from mxgate.routing.loops import delivered_messages, forwarding_loop, hops, too_many_hops
from mxgate.routing.quarantine import (
    MessageFacts,
    QuarantineRule,
    auth_verdicts,
    facts_of,
    quarantine_rule,
)
from mxgate.routing.spoofing import RULE as SPOOFING_RULE
from mxgate.routing.spoofing import Spoofing, SpoofingVerdict, own_domain_spoofing
from mxgate.workflow.services import Services


@dataclass(frozen=True, slots=True)
class Hold:
    """Why a recipient is quarantined: its terminal route, the rule, and the reason."""

    route: str  # quarantine:<rule>, or unknown
    rule: str
    reason: str
    detail: str  # what its terminal state says


@dataclass(frozen=True)
class Judgement:
    """What Process decides for each recipient before routing it: a loop is bounced; own-domain
    spoofing, an unknown address and the routes' quarantine rules hold it."""

    facts: MessageFacts
    spoofing: SpoofingVerdict
    too_many_hops: str | None  # the reason, when the hop limit is passed
    delivered_before: Mapping[str, str]  # recipient (casefold) -> an earlier message id
    rules: Sequence[QuarantineRule]

    def loop(self, recipient: str) -> str | None:
        earlier = self.delivered_before.get(recipient.casefold())
        if earlier is not None:
            return forwarding_loop(recipient, earlier)
        return self.too_many_hops

    def hold(self, route: Route) -> Hold | None:
        """Why the recipient on `route` is quarantined, or None to deliver."""
        if route.kind is RouteKind.UNKNOWN:
            return Hold("unknown", "no route", route.reason, route.reason)
        if self.spoofing.verdict is Spoofing.SPOOFED:
            why = self.spoofing.reason
            return Hold(f"quarantine:{SPOOFING_RULE}", SPOOFING_RULE, why, why)
        held = quarantine_rule(self.rules, route.name, self.facts)
        if held is None:
            return None
        rule, why = held
        return Hold(f"quarantine:{rule.name}", rule.name, why, f"rule {rule.name}: {why}")


def judge(
    parsed: ParsedMessage,
    envelope: Envelope,
    authentication: Authentication | None,
    services: Services,
) -> Judgement:
    # Mail from inside came through an AUTH ingress point, vouched for by SMTP AUTH (the
    # envelope says so from Mail Manager's own Received field, or the local session): its SPF,
    # DKIM and DMARC results (judged against a submitting client's address) are not what
    # quarantine rules are written for, and it is never own-domain spoofing.
    from_inside = envelope.authenticated
    facts = facts_of(parsed, None if from_inside else auth_verdicts(authentication))
    spoofing = _spoofing(facts.from_domain, from_inside, authentication, services)
    if spoofing.verdict is Spoofing.UNDECIDED:
        raise TransientError(spoofing.reason)  # retried, then deferred: never held for a DNS blip
    return Judgement(
        facts=facts,
        spoofing=spoofing,
        too_many_hops=too_many_hops(
            hops(h.name for h in parsed.headers), services.routes.hop_limit
        ),
        # A token in submitted mail is a user's own doing (a redirect of mail she got), not a
        # loop through the MX: only the hop limit applies to it.
        delivered_before=(
            {} if from_inside else _delivered_before(parsed, envelope.message_id, services)
        ),
        rules=services.routes.quarantine,
    )


def _delivered_before(parsed: ParsedMessage, message_id: str, services: Services) -> dict[str, str]:
    """The recipients this gateway delivered the message to already, on an earlier pass: the
    messages its loop tokens name, and their recipients' terminal states (read only when a
    token of ours is there: a message seen for the first time costs nothing)."""
    if services.loop_key is None:
        return {}
    tokens = [h.value for h in parsed.headers if h.name.casefold() == LOOP_HEADER.casefold()]
    found: dict[str, str] = {}
    for earlier in delivered_messages(tokens, services.loop_key):
        if earlier == message_id:
            continue
        for state in services.timeline.states(earlier):
            if state.outcome in (Outcome.DELIVERED, Outcome.RELAYED, Outcome.HANDED_TO_APP):
                found.setdefault(state.recipient.casefold(), earlier)
    return found


def _spoofing(
    from_domain: str | None,
    from_inside: bool,
    authentication: Authentication | None,
    services: Services,
) -> SpoofingVerdict:
    """Whether the message claims one of our domains from outside without passing DMARC
    (judged only where the routes ask for it: `own_domain_spoofing: quarantine`)."""
    if services.routes.own_domain_spoofing != "quarantine":
        return SpoofingVerdict(Spoofing.NOT_OURS)
    return own_domain_spoofing(
        from_domain=from_domain,
        own_domains=services.routes.own_domains,
        from_outside=not from_inside,
        dmarc=authentication.dmarc.result.value if authentication else None,
        dmarc_reason=authentication.dmarc.reason if authentication else "",
    )
