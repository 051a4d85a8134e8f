"""How one route's recipients become deliveries: what the process step plans, and what a
quarantine release plans again."""

from __future__ import annotations

from mxgate.records import MAX_RECIPIENTS_PER_DELIVERY, Delivery, MessageRef, variant_of
from mxgate.routing.classify import RouteKind
from mxgate.routing.routes import Routes


def plan_deliveries(
    ref: MessageRef,
    kind: RouteKind,
    destination: str,
    recipients: list[str],
    *,
    routes: Routes,
    prepend: list[tuple[str, str]],
) -> list[Delivery]:
    """A route's deliveries, at most 50 recipients each: the delivery itself, the app's
    webhook if it has one, and one per post-ingress hook the route lists."""
    app = routes.apps.get(destination) if kind is RouteKind.APP else None
    planned: list[Delivery] = []
    for start in range(0, len(recipients), MAX_RECIPIENTS_PER_DELIVERY):
        chunk = recipients[start : start + MAX_RECIPIENTS_PER_DELIVERY]
        number = start // MAX_RECIPIENTS_PER_DELIVERY
        base = f"{ref.message_id}{variant_of(ref.key)}.{destination}"  # one per stored version
        planned.append(
            Delivery(
                delivery_id=f"{base}.{number}",
                message=ref,
                kind=kind.value,
                destination=destination,
                recipients=chunk,
                prepend=prepend,
            )
        )
        if app is not None and app.webhook is not None:
            planned.append(
                Delivery(
                    delivery_id=f"{base}.webhook.{number}",
                    message=ref,
                    kind="webhook",
                    destination=destination,
                    recipients=chunk,
                )
            )
        planned += [
            Delivery(
                delivery_id=f"{base}.hook-{hook}.{number}",
                message=ref,
                kind="hook",
                destination=hook,
                recipients=chunk,
                route=destination,
            )
            for hook in routes.route_hooks(destination)
        ]
    return planned
