"""What the mailbox provider did with a delivery a relay accepted: SES's configuration set
events, on each recipient's timeline.

A delivery SES accepts ends `relayed`: SES took it, the mailbox host has not answered yet.
SES reports what happened next, and the recipient's state follows:

| event | the recipient |
|---|---|
| delivered (the mailbox host took it) | `relayed` -> `delivered` |
| bounced (refused for good, at once or after SES's retries) | `relayed` or `delivered` -> `bounced` |
| rejected (SES refused to send it: a virus) | `relayed` -> `quarantined` |
| complained, delayed | stays; an event on the timeline |

Events arrive out of order and more than once (EventBridge delivers at least once, best
effort): a state only ever moves along this table, so a late Delivery after a Bounce changes
nothing and a repeated event is a no-op. An event for a recipient whose delivery is not
recorded yet fails transiently, to be retried.
"""

from __future__ import annotations

from mxgate.errors import TransientError
from mxgate.records import Outcome, RecipientState, Stage, TimelineEvent
from mxgate.routing.routes import routed_address
from mxgate.workflow.model import ProviderEvent, RecipientResult
from mxgate.workflow.services import Services

# event -> (the state it gives, the states it may replace)
MOVES: dict[str, tuple[Outcome, frozenset[Outcome]]] = {
    "delivered": (Outcome.DELIVERED, frozenset({Outcome.RELAYED})),
    "bounced": (Outcome.BOUNCED, frozenset({Outcome.RELAYED, Outcome.DELIVERED})),
    "rejected": (Outcome.QUARANTINED, frozenset({Outcome.RELAYED})),
}


def record_provider_event(event: ProviderEvent, services: Services) -> list[RecipientResult]:
    """Apply one SES event to the timeline of the message and route it names."""
    destination = services.routes.destinations.get(event.route)
    routing_domain = destination.routing_domain if destination is not None else None
    on_route = {
        routed_address(s.recipient, routing_domain).casefold(): s
        for s in services.timeline.states(event.message_id)
        if s.route == event.route
    }
    addresses = event.recipients or list(on_route)  # a Reject names no recipient: all of them
    results: list[RecipientResult] = []
    events: list[TimelineEvent] = []
    missing: list[str] = []
    for address in addresses:
        state = on_route.get(address.casefold())
        if state is None:
            missing.append(address)
            continue
        reason = event.reasons.get(address, "")
        detail = f"{event.detail}: {reason}" if reason else event.detail
        detail = f"{detail}; SES message {event.ses_message_id}"
        move = MOVES.get(event.kind)
        if move is not None:
            outcome, replaces = move
            revised = services.timeline.revise(
                RecipientState(
                    message_id=event.message_id,
                    recipient=state.recipient,
                    outcome=outcome,
                    at=event.at,
                    route=state.route,
                    detail=f"{event.kind} ({state.route}): {detail}",
                ),
                replaces=replaces,
            )
            results.append(
                RecipientResult(
                    recipient=state.recipient,
                    outcome=outcome.value if revised else state.outcome.value,
                    detail=detail if revised else f"stays {state.outcome.value}",
                )
            )
            if outcome is Outcome.DELIVERED:
                continue  # the usual end: the new state says it all (one write per recipient)
        events.append(
            TimelineEvent(
                message_id=event.message_id,
                at=event.at,
                stage=Stage.PROVIDER,
                recipient=state.recipient,
                detail=f"{event.kind}: {detail}",
            )
        )
    if events:
        services.timeline.record_many(events)
    if missing:
        raise TransientError(
            f"{event.kind} event for {', '.join(missing)} of {event.message_id} ({event.route}) "
            "before its delivery was recorded"
        )
    return results
