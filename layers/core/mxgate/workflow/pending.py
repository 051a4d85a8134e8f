"""Where a delivery stands: which of its recipients are done, which are still to do. Every
delivery step starts here, so a repeated step (a retry, a replay) never does anything twice."""

from __future__ import annotations

from mxgate.records import Delivery
from mxgate.workflow.model import RecipientResult
from mxgate.workflow.services import Services


def idempotency_key(delivery: Delivery, recipient: str) -> str:
    return (
        f"{delivery.message.digest}:{recipient.casefold()}:{delivery.kind}:{delivery.destination}"
    )


def pending(delivery: Delivery, services: Services) -> tuple[list[RecipientResult], list[str]]:
    """(recipients already done, recipients still to do).

    A delivery that settles recipients is done for those with a terminal state: that state is
    its idempotency record (one write, so no window between "sent" and "recorded" beyond the
    send itself). Webhooks and hooks settle nothing and keep idempotency keys instead."""
    done: list[RecipientResult] = []
    left: list[str] = []
    if delivery.settles:
        settled = {
            s.recipient.casefold(): s for s in services.timeline.states(delivery.message.message_id)
        }
        for recipient in delivery.recipients:
            state = settled.get(recipient.casefold())
            if state is None:
                left.append(recipient)
            else:
                done.append(
                    RecipientResult(
                        recipient=recipient, outcome=state.outcome.value, detail="already settled"
                    )
                )
        return done, left
    for recipient in delivery.recipients:
        previous = services.idempotency.seen(idempotency_key(delivery, recipient))
        if previous is None:
            left.append(recipient)
        else:
            done.append(
                RecipientResult(recipient=recipient, outcome=previous, detail="already done")
            )
    return done, left
