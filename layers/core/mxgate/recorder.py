"""Writes a message's timeline and terminal states through the Timeline port, stamped by one
clock: how the workflow steps and the local runtime record what happened."""

from __future__ import annotations

from collections.abc import Sequence

from mxgate.ports import Clock, Timeline
from mxgate.records import MessageSummary, Outcome, RecipientState, Stage, TimelineEvent


class Recorder:
    """Writes a message's timeline and terminal states, stamped by one clock."""

    def __init__(self, timeline: Timeline, clock: Clock) -> None:
        self.timeline = timeline
        self.clock = clock

    def event(
        self,
        message_id: str,
        stage: Stage,
        detail: str = "",
        recipient: str | None = None,
        *,
        summary: MessageSummary | None = None,
    ) -> TimelineEvent:
        """An event stamped now, for `record` (events that happen together go in one write)."""
        return TimelineEvent(
            message_id=message_id,
            at=self.clock.now(),
            stage=stage,
            recipient=recipient,
            detail=detail,
            summary=summary,
        )

    def record(self, events: Sequence[TimelineEvent]) -> None:
        self.timeline.record_many(events)

    def note(
        self, message_id: str, stage: Stage, detail: str = "", recipient: str | None = None
    ) -> None:
        """Record one event now."""
        self.timeline.record(self.event(message_id, stage, detail, recipient))

    def settle(
        self, message_id: str, recipient: str, *, outcome: Outcome, route: str, detail: str
    ) -> bool:
        """Give the recipient its terminal state; False if it had one already (which stays)."""
        return self.timeline.settle(
            RecipientState(
                message_id=message_id,
                recipient=recipient,
                outcome=outcome,
                at=self.clock.now(),
                route=route,
                detail=detail,
            )
        )

    def quarantine(
        self,
        message_id: str,
        recipients: Sequence[str],
        reason: str,
        *,
        route: str = "quarantine",
        kept_at: str | None = None,
    ) -> list[RecipientState]:
        """Quarantine recipients: each settles `quarantined` with the reason. A whole message
        that could not be processed (`kept_at` given: where it is kept, or "" when it is gone)
        also gets one `terminal` event of its own, which names the place."""
        now = self.clock.now()
        if kept_at is not None:
            detail = f"{reason}; kept at {kept_at}" if kept_at else reason
            self.timeline.record(
                TimelineEvent(message_id=message_id, at=now, stage=Stage.TERMINAL, detail=detail)
            )
        states = [
            RecipientState(
                message_id=message_id,
                recipient=recipient,
                outcome=Outcome.QUARANTINED,
                at=now,
                route=route,
                detail=reason,
            )
            for recipient in recipients
        ]
        for state in states:
            self.timeline.settle(state)
        return states
