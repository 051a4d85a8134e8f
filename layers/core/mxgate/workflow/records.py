"""What the steps write on a message's timeline: events and terminal states, stamped by the
services' clock, their details cut to what the stores keep."""

from __future__ import annotations

from mxgate.timeline import MessageSummary, Outcome, RecipientState, Stage, TimelineEvent
from mxgate.workflow.services import Services

EVENT_DETAIL_MAX = 1000
STATE_DETAIL_MAX = 500


def event(
    services: Services,
    message_id: str,
    stage: Stage,
    detail: str = "",
    recipient: str | None = None,
    *,
    summary: MessageSummary | None = None,
) -> TimelineEvent:
    return TimelineEvent(
        message_id=message_id,
        at=services.clock.now(),
        stage=stage,
        recipient=recipient,
        detail=detail[:EVENT_DETAIL_MAX],
        summary=summary,
    )


def settle(
    services: Services,
    message_id: str,
    recipient: str,
    *,
    outcome: Outcome,
    route: str,
    detail: str,
) -> bool:
    """Give the recipient its terminal state; False if it had one already (which stays)."""
    return services.timeline.settle(
        RecipientState(
            message_id=message_id,
            recipient=recipient,
            outcome=outcome,
            at=services.clock.now(),
            route=route,
            detail=detail[:STATE_DETAIL_MAX],
        )
    )
