"""What happened to a message and to each of its recipients, and when."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Stage(StrEnum):
    ACCEPTED = "accepted"
    RULES = "rules"
    STORED = "stored"
    PARSED = "parsed"
    AUTHENTICATED = "authenticated"
    CLASSIFIED = "classified"
    ARCHIVED = "archived"
    ATTEMPT = "attempt"
    RETRY = "retry"
    DEFERRED = "deferred"
    REDRIVEN = "redriven"
    RELEASED = "released"  # from quarantine, by an operator
    DELETED = "deleted"  # from quarantine, by an operator
    TERMINAL = "terminal"


class Outcome(StrEnum):
    """The terminal states: every accepted recipient ends in exactly one."""

    DELIVERED = "delivered"
    HANDED_TO_APP = "handed_to_app"
    QUARANTINED = "quarantined"
    DROPPED = "dropped"
    BOUNCED = "bounced"
    DEAD_LETTERED = "dead_lettered"


class MessageSummary(BaseModel):
    """Who sent a message to whom, about what: what tracking searches (`mxgate trace --from`).
    The `parsed` event carries it, so it costs no write of its own."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    envelope_sender: str = ""
    from_: str = Field(default="", alias="from")  # the From field's addresses
    recipients: list[str] = Field(default_factory=list)
    subject: str = ""


class TimelineEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    message_id: str
    at: datetime
    stage: Stage
    recipient: str | None = None
    detail: str = ""
    summary: MessageSummary | None = None  # on the `parsed` event


class RecipientState(BaseModel):
    model_config = ConfigDict(frozen=True)

    message_id: str
    recipient: str
    outcome: Outcome
    at: datetime
    route: str = ""
    detail: str = ""
