"""Tracking searches: which messages were sent by whom to whom about what, and how they
ended (`mxgate trace --from X --to Y --subject S --since 1h --outcome dead_lettered`). Pure.

Each text filter is a case-insensitive substring, as in archive searches; `--from` looks at
the envelope sender and the From field, `--to` at every recipient."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from mxgate.ports import Timeline
from mxgate.records import MessageSummary, Outcome

IN_PROGRESS = "in_progress"  # an --outcome: some recipient has no terminal state yet


class TraceQuery(BaseModel):
    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid", populate_by_name=True)

    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    outcome: str | None = None  # an Outcome, or in_progress
    limit: int = Field(default=20, ge=1, le=1000)

    @property
    def any_filter(self) -> bool:
        return any(
            v is not None
            for v in (self.from_, self.to, self.subject, self.since, self.until, self.outcome)
        )

    def matches_summary(self, summary: MessageSummary) -> bool:
        def contains(needle: str | None, *hay: str) -> bool:
            return needle is None or any(needle.casefold() in h.casefold() for h in hay)

        return (
            contains(self.from_, summary.envelope_sender, summary.from_)
            and contains(self.to, *summary.recipients)
            and contains(self.subject, summary.subject)
        )

    def matches_outcomes(self, outcomes: list[Outcome], recipients: int) -> bool:
        if self.outcome is None:
            return True
        if self.outcome == IN_PROGRESS:
            return len(outcomes) < recipients
        return any(o.value == self.outcome for o in outcomes)


OUTCOME_CHOICES = [o.value for o in Outcome] + [IN_PROGRESS]


class MessageIndex(Protocol):
    """The parsed messages' summaries, newest first (the state database or table)."""

    def summaries(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[tuple[str, datetime, MessageSummary]]: ...


class TrackedMessage(BaseModel):
    model_config = ConfigDict(defer_build=True, frozen=True, populate_by_name=True)

    message_id: str
    parsed_at: datetime
    envelope_sender: str
    from_: str = Field(default="", alias="from")
    recipients: list[str]
    subject: str
    outcomes: dict[str, str]  # recipient -> terminal state (so far)
    in_progress: bool


def track(index: MessageIndex, timeline: Timeline, query: TraceQuery) -> list[TrackedMessage]:
    """The newest messages that match, with each recipient's terminal state so far."""
    found: list[TrackedMessage] = []
    for message_id, at, summary in index.summaries(query.since, query.until):
        if not query.matches_summary(summary):
            continue
        states = timeline.states(message_id)
        if not query.matches_outcomes([s.outcome for s in states], len(summary.recipients)):
            continue
        found.append(
            TrackedMessage(
                message_id=message_id,
                parsed_at=at,
                envelope_sender=summary.envelope_sender,
                from_=summary.from_,
                recipients=summary.recipients,
                subject=summary.subject,
                outcomes={s.recipient: s.outcome.value for s in states},
                in_progress=len(states) < len(summary.recipients),
            )
        )
        if len(found) >= query.limit:
            break
    return found
