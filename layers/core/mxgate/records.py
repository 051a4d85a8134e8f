"""The records of mail, on both runtimes: what the pipeline carries (an accepted message's
SMTP envelope, the stored message, a delivery) and what is kept about it (the timeline's
events, each recipient's terminal state, deferred work, dead letters, quarantined mail; the
archive's entries are `archive.query.ArchivedMessage`, with the searches they answer).

One module on purpose, past the usual size: every writer builds these models, so a fact has
one shape wherever it is written (spool files, envelope sidecars, state machine documents,
SQLite, DynamoDB, SQS). Each record names its message, times are datetimes, and texts are cut
to what the stores keep inside the model, never by the writer. `mxgate.recorder` writes the
timeline and terminal states through the Timeline port.

Stored messages are named by message id: Mail Manager's WriteToS3 writes
`<prefix><message id>`, and when AddHeader gives the recipients different versions of the
message, the local emulator stores each under `<key>.variant-<n>` (one object and one workflow
run per version), which its workflow run gets with the envelope of that version's recipients.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)

EVENT_DETAIL_MAX = 1000  # characters of a timeline event's detail
STATE_DETAIL_MAX = 500  # of a terminal state's detail, and of a deferral's last error
REASON_MAX = 1000  # of a dead letter's reason
SUBJECT_MAX = 200  # of a subject kept with a stored message's reference
UNKNOWN_RECIPIENTS = "(unknown recipients)"  # settled when a message's recipients are unknown
ENVELOPE_PREFIX = "envelopes/"
VARIANT = ".variant-"
MAX_RECIPIENTS_PER_DELIVERY = 50  # SES sending takes at most 50 recipients per message


def _cut(limit: int) -> AfterValidator:
    return AfterValidator(lambda text: text[:limit])


EventDetail = Annotated[str, _cut(EVENT_DETAIL_MAX)]
StateDetail = Annotated[str, _cut(STATE_DETAIL_MAX)]
Reason = Annotated[str, _cut(REASON_MAX)]
Subject = Annotated[str, _cut(SUBJECT_MAX)]


class Record(BaseModel):
    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")


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
    PROVIDER = "provider"  # what the mailbox provider did, as SES reports it
    RELEASED = "released"  # from quarantine, by an operator
    DELETED = "deleted"  # from quarantine, by an operator
    TERMINAL = "terminal"


class Outcome(StrEnum):
    """The terminal states: every accepted recipient ends in exactly one. `relayed` is handed
    to a relay that reports later what the mailbox host did (SES): its report moves the state
    to `delivered` or `bounced` (workflow/provider.py)."""

    DELIVERED = "delivered"
    RELAYED = "relayed"
    HANDED_TO_APP = "handed_to_app"
    QUARANTINED = "quarantined"
    DROPPED = "dropped"
    BOUNCED = "bounced"
    DEAD_LETTERED = "dead_lettered"


# ----------------------------------------------------------------------------- mail


class Envelope(Record):
    """The SMTP envelope as the ingress saw it: the pipeline's sender and recipients, never the
    header fields'."""

    message_id: str
    mail_from: str
    recipients: list[str]
    helo: str = ""
    source_ip: str = ""
    tls_protocol: str | None = None  # Mail Manager's name: TLS1_2, TLS1_3
    tls_cipher: str | None = None  # e.g. TLS_AES_256_GCM_SHA384
    tls_cipher_bits: int | None = None
    authenticated: bool = False  # SMTP AUTH succeeded (an AUTH ingress point)
    received_at: datetime | None = None  # None: not known
    ingress_point: str = ""  # the Mail Manager ingress point (logical id) that accepted it

    @field_validator("received_at", mode="before")
    @classmethod
    def _unknown_is_none(cls, value: object) -> object:
        return None if value == "" else value  # spool files of earlier versions wrote ""


class MessageRef(Record):
    """A stored message, as its deliveries refer to it."""

    message_id: str
    bucket: str
    key: str
    digest: str  # sha256 of the stored bytes: half of every idempotency key
    envelope_sender: str
    size: int
    subject: Subject = ""
    # A small message travels with its deliveries (base64), so delivering it reads nothing
    # back from the store: one request fewer per message on AWS (bench/cost.py).
    inline: str | None = None
    # The stored bytes hold a byte >= 0x80 (a delivery then says BODY=8BITMIME), known from the
    # pass that stored or processed them; None in a record from before: delivery scans.
    eight_bit: bool | None = None


class Deferral(Record):
    """Where deferred work stands (a delivery, or a message Process could not handle): its
    lifetime counts from the first deferral."""

    first_deferred_at: datetime
    attempts: int = Field(ge=1)
    last_error: StateDetail = ""


DeliveryKind = Literal["mailbox", "app", "webhook", "hook", "bounce"]


class BounceNotice(Record):
    """Why the recipients of a `bounce` delivery are bounced: the DSN's status and reason."""

    status: str  # enhanced status code (RFC 3463), e.g. 5.4.6
    diagnostic: str


class Delivery(Record):
    """One hand-off: one message, one destination, up to 50 recipients.

    `mailbox` and `app` deliveries settle their recipients, and so does `bounce` (a DSN to
    the envelope sender for recipients that cannot be delivered, such as a loop's); `webhook`
    (an app's signed webhook) and `hook` (a post-ingress hook) deliveries only record what
    happened."""

    delivery_id: str
    message: MessageRef
    kind: DeliveryKind
    destination: str  # the mailbox host, the app, the hook, or the sender (bounce)
    recipients: list[str] = Field(min_length=1, max_length=MAX_RECIPIENTS_PER_DELIVERY)
    prepend: list[tuple[str, str]] = Field(default_factory=list)  # trace header fields
    route: str = ""  # whose delivery policy applies, when not the destination's (hooks)
    deferral: Deferral | None = None
    bounce: BounceNotice | None = None  # kind bounce: why

    @property
    def settles(self) -> bool:
        return self.kind in ("mailbox", "app", "bounce")

    @property
    def policy_route(self) -> str:
        return self.route or self.destination


# ----------------------------------------------------------------------------- names


def variant_key(key: str, variant: int) -> str:
    """The key of one version of a message (`variant` 0: the only one keeps `key`)."""
    return f"{key}{VARIANT}{variant}" if variant else key


def variant_of(key: str) -> str:
    """`.variant-<n>` for a version's key, else empty."""
    name = posixpath.basename(key).removesuffix(".eml")
    head, marker, number = name.rpartition(VARIANT)
    return f"{marker}{number}" if head and number.isdigit() else ""


def message_id_of(key: str) -> str:
    name = posixpath.basename(key).removesuffix(".eml")
    return name.removesuffix(variant_of(name))


def envelope_key(key: str) -> str:
    """The envelope of the object at `key` (one per stored object, prefixes kept apart)."""
    return f"{ENVELOPE_PREFIX}{key}.json"


def recipients_digest(recipients: Iterable[str]) -> str:
    """Eight hex digits naming a set of recipients, whatever their order, case or repeats: part
    of the ids of dead letters and deferred records, which are named by their recipients."""
    folded = sorted({r.casefold() for r in recipients})
    return hashlib.sha256(",".join(folded).encode()).hexdigest()[:8]


# ----------------------------------------------------------------------------- the timeline


class MessageSummary(BaseModel):
    """Who sent a message to whom, about what: what tracking searches (`mxgate trace --from`).
    The `parsed` event carries it, so it costs no write of its own."""

    model_config = ConfigDict(defer_build=True, frozen=True, populate_by_name=True)

    envelope_sender: str = ""
    from_: Subject = Field(default="", alias="from")  # the From field's addresses
    recipients: list[str] = Field(default_factory=list)
    subject: Subject = ""


class TimelineEvent(Record):
    message_id: str
    at: datetime
    stage: Stage
    recipient: str | None = None
    detail: EventDetail = ""
    summary: MessageSummary | None = None  # on the `parsed` event


class RecipientState(Record):
    """A recipient's terminal state. It is also the recipient's `terminal` timeline event
    (`event()`): a Timeline shows each settled recipient's once, however it stores it."""

    message_id: str
    recipient: str
    outcome: Outcome
    at: datetime
    route: str = ""
    detail: StateDetail = ""

    def event(self) -> TimelineEvent:
        said = f"{self.outcome} ({self.route})" if self.route else f"{self.outcome}"
        return TimelineEvent(
            message_id=self.message_id,
            at=self.at,
            stage=Stage.TERMINAL,
            recipient=self.recipient,
            detail=f"{said}: {self.detail}",
        )


# ----------------------------------------------------------------------------- deferred work


class DeferredDelivery(Record):
    """A delivery waiting in the deferred queue for its next attempt (or a redrive)."""

    kind: Literal["delivery"] = "delivery"
    record_id: str
    due_at: datetime
    delivery: Delivery

    @property
    def message_id(self) -> str:
        return self.delivery.message.message_id

    @property
    def recipients(self) -> list[str]:
        return self.delivery.recipients


class RuleSetRetry(Record):
    """A deferred-queue record of the local runtime: run the rule set again for some
    recipients of a message.

    The message is the kept spool file (automatic retries), or the copy a dead letter kept in
    the object store (a redrive). The lifetime counts from the first failure."""

    kind: Literal["rule-set-retry"] = "rule-set-retry"
    record_id: str
    due_at: datetime
    envelope: Envelope  # its recipients: the accepted addresses to run through the rule set
    recipients: list[str]  # the addresses still open (a ReplaceRecipient's new ones included)
    spool_file: str = ""  # name in the spool directory
    bucket: str = ""
    key: str = ""
    first_failed_at: datetime | None = None  # None: a redrive, whose lifetime starts anew
    attempts: int = 0
    last_error: StateDetail = ""

    @model_validator(mode="before")
    @classmethod
    def _redrive_has_no_first_failure(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("first_failed_at") == "":
            return {**data, "first_failed_at": None}  # records of earlier versions wrote ""
        return data

    @model_validator(mode="after")
    def _one_source(self) -> RuleSetRetry:
        if bool(self.spool_file) == bool(self.bucket and self.key):
            raise ValueError("a rule set retry names either a spool file or a stored object")
        return self

    @property
    def message_id(self) -> str:
        return self.envelope.message_id

    @property
    def is_redrive(self) -> bool:
        return self.first_failed_at is None


class StoredObject(Record):
    """A stored message as an execution runs it through Process: the object, and the SMTP
    envelope when the trigger carries it."""

    bucket: str
    key: str
    envelope: Envelope | None = None

    @property
    def message_id(self) -> str:
        return message_id_of(self.key)

    @property
    def processing_id(self) -> str:
        """`<message id>[.variant-<n>].processing`: names its deferrals and its dead letter."""
        return f"{self.message_id}{variant_of(self.key)}.processing"


class DeferredProcessing(Record):
    """A deferred-queue record that runs a stored message through Process again: after
    transient failures of Process (deferred on the deliveries' schedule), or a redrive. Its
    lifetime counts from the first failure, as a deferred delivery's does."""

    kind: Literal["processing"] = "processing"
    record_id: str
    due_at: datetime
    stored: StoredObject
    deferral: Deferral | None = None  # None: a redrive, whose lifetime starts anew

    @property
    def message_id(self) -> str:
        return self.stored.message_id

    @property
    def recipients(self) -> list[str]:
        return self.stored.envelope.recipients if self.stored.envelope else []


class MapItem(Record):
    """One item of a Map state: where a suspended execution is inside that Map."""

    state: str  # the Map state's name
    index: int


class SuspendedExecution(Record):
    """Where a state machine execution stands while one of its Tasks waits out a Retry
    interval: what `Interpreter.resume` needs to go on from there, in any process."""

    name: str  # the execution's
    items: list[MapItem] = Field(
        default_factory=list
    )  # the Map items holding the Task, outer first
    state: str  # the Task to run again
    document: Any  # that state's input
    context: dict[str, Any]  # the `$$` context: Execution, and the Map item
    attempts: dict[int, int]  # retries made so far at this state, by retrier index


class StepRetry(Record):
    """A deferred-queue record of the local runtime: a state machine Task's next attempt,
    once its Retry interval has passed. The interval is waited out here, in the queue, never
    in a worker, so one destination's outage holds up no other mail (Step Functions waits on
    its own timers)."""

    kind: Literal["step-retry"] = "step-retry"
    record_id: str
    due_at: datetime
    message_id: str
    recipients: list[str] = Field(default_factory=list)  # the delivery's (none: the message's)
    error: StateDetail = ""  # what the attempt failed with
    attempt: int = Field(ge=1)  # the retry this is
    execution: SuspendedExecution


_DEFERRED_KINDS = ("rule-set-retry", "processing", "step-retry")


def _deferred_kind(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if kind in _DEFERRED_KINDS else "delivery"  # older records: no kind


Deferred = Annotated[
    Annotated[DeferredDelivery, Tag("delivery")]
    | Annotated[RuleSetRetry, Tag("rule-set-retry")]
    | Annotated[DeferredProcessing, Tag("processing")]
    | Annotated[StepRetry, Tag("step-retry")],
    Discriminator(_deferred_kind),
]
DEFERRED: TypeAdapter[DeferredDelivery | RuleSetRetry | DeferredProcessing | StepRetry] = (
    TypeAdapter(Deferred, config=ConfigDict(defer_build=True))
)


# ----------------------------------------------------------------------------- dead letters


class StoredMessage(Record):
    """Where a dead letter's message is kept, and what a person sees of it."""

    bucket: str
    key: str
    subject: Subject = ""
    envelope_sender: str = ""


class DeadLetterRecord(Record):
    """What every dead letter says: which recipients of which message, where they were going,
    and why they could not get there."""

    record_id: str
    message_id: str
    destination: str
    recipients: list[str]
    error: str
    cause: str = ""
    reason: Reason = ""
    at: datetime

    @property
    def label(self) -> str:
        return f"{getattr(self, 'kind', '')} {self.destination}"


class DeliveryDeadLetter(DeadLetterRecord):
    """A delivery that could not be completed (refused, over a policy, or expired)."""

    kind: DeliveryKind  # the delivery's
    delivery: Delivery  # what a redrive runs again (its recipients: these)

    @property
    def message(self) -> StoredMessage:
        ref = self.delivery.message
        return StoredMessage(
            bucket=ref.bucket,
            key=ref.key,
            subject=ref.subject,
            envelope_sender=ref.envelope_sender,
        )

    @property
    def what(self) -> str:
        return f"{self.kind} to {self.destination}"


class RuleSetDeadLetter(DeadLetterRecord):
    """Recipients whose rule actions failed for good (local runtime: Mail Manager runs the
    rules on AWS). The message as received is kept beside the record, for a redrive. Its
    destination is the rule set's logical id."""

    kind: Literal["rules"] = "rules"
    envelope: Envelope  # its recipients: the accepted addresses to run through the rule set
    message: StoredMessage
    failures: dict[str, list[str]]  # recipient -> its failed actions

    @property
    def what(self) -> str:
        return f"rule actions of rule set {self.destination}"


class ProcessingDeadLetter(DeadLetterRecord):
    """A stored message Process could not handle: for good, or past the queue lifetime of its
    deferred retries. A redrive runs it through Process again. Its destination is `Process`."""

    kind: Literal["processing"] = "processing"
    stored: StoredObject

    @property
    def message(self) -> StoredMessage:
        sender = self.stored.envelope.mail_from if self.stored.envelope else ""
        return StoredMessage(bucket=self.stored.bucket, key=self.stored.key, envelope_sender=sender)

    @property
    def what(self) -> str:
        return "processing of the stored message (Process failed)"


DeadLetter = Annotated[
    DeliveryDeadLetter | RuleSetDeadLetter | ProcessingDeadLetter, Field(discriminator="kind")
]
DEAD_LETTER: TypeAdapter[DeliveryDeadLetter | RuleSetDeadLetter | ProcessingDeadLetter] = (
    TypeAdapter(DeadLetter, config=ConfigDict(defer_build=True))
)


# ----------------------------------------------------------------------------- quarantine


class HeldRecipient(BaseModel):
    model_config = ConfigDict(defer_build=True, frozen=True)

    recipient: str
    route: str  # the route it had when held ("unknown": none)
    rule: str  # the quarantine rule, or why it was held without one
    reason: StateDetail
    released_at: datetime | None = None
    released_by: str = ""


class Release(BaseModel):
    """One release to an address that was not held (`release ID --to RECIPIENT`)."""

    model_config = ConfigDict(defer_build=True, frozen=True)

    recipient: str
    released_at: datetime
    released_by: str


class QuarantineRecord(BaseModel):
    """Quarantined mail an operator can act on (list, show, release, delete): the record the
    process and quarantine steps keep for each message they hold."""

    model_config = ConfigDict(defer_build=True, frozen=True, populate_by_name=True)

    quarantine_id: str  # the message id (with the stored version's suffix, if any)
    message_id: str
    held_at: datetime
    expires_at: datetime | None = None  # the quarantine's retention ends here
    message: MessageRef  # where the message is kept, and what it is
    # processing_failed: records of earlier versions (a failed Process is now dead-lettered);
    # unreadable_spool_file: the local pipeline could not read a spooled message's envelope;
    # internal_error: the local pipeline failed for good on it before the state machine
    source: Literal[
        "rules", "not_understood", "processing_failed", "unreadable_spool_file", "internal_error"
    ] = "rules"
    from_: str = Field(default="", alias="from")
    to: str = ""
    verdicts: str = ""  # the authentication summary, when it ran
    attachments: list[str] = Field(default_factory=list)  # "name (type, bytes)"
    prepend: list[tuple[str, str]] = Field(default_factory=list)  # trace fields for mailboxes
    recipients: list[HeldRecipient]
    released_to: list[Release] = Field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(dict.fromkeys(f"{h.rule}: {h.reason}" for h in self.recipients))

    @property
    def held(self) -> list[HeldRecipient]:
        """Recipients still held (not released)."""
        return [h for h in self.recipients if h.released_at is None]
