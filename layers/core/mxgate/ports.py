"""The ports the core talks through. Each runtime's composition root supplies adapters:
files and SQLite on one machine, S3, DynamoDB, SES, SQS and EventBridge on AWS."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, BinaryIO, Protocol

from mxgate.archive.query import ArchivedMessage, ArchiveQuery
from mxgate.errors import TransientError
from mxgate.timeline import RecipientState, TimelineEvent

if TYPE_CHECKING:
    from mxgate.workflow.model import Arrival, ArrivalRecord


class Clock(Protocol):
    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    metadata: Mapping[str, str]


class ObjectStore(Protocol):
    def put(
        self, bucket: str, key: str, body: bytes, metadata: Mapping[str, str] | None = None
    ) -> ObjectInfo: ...

    def head(self, bucket: str, key: str) -> ObjectInfo: ...

    def open(self, bucket: str, key: str) -> BinaryIO:
        """A readable stream of the object, so large messages need not sit in memory."""
        ...

    def get(self, bucket: str, key: str) -> bytes: ...

    def exists(self, bucket: str, key: str) -> bool: ...

    def link(self, bucket: str, key: str) -> str:
        """Where an application can fetch the object (a file URI or a presigned URL)."""
        ...


class Timeline(Protocol):
    def record(self, event: TimelineEvent) -> None: ...

    def record_many(self, events: Sequence[TimelineEvent]) -> None: ...

    def settle(self, state: RecipientState) -> bool:
        """Record a recipient's terminal state; False if it already had one (first one wins)."""
        ...

    def reopen(self, message_id: str, recipient: str) -> None:
        """Forget a recipient's terminal state, so a redriven delivery can settle it anew."""
        ...

    def states(self, message_id: str) -> list[RecipientState]: ...

    def events(self, message_id: str) -> list[TimelineEvent]: ...

    def recent(self, limit: int) -> list[str]: ...


class Idempotency(Protocol):
    def seen(self, key: str) -> str | None:
        """The recorded outcome of work done under this key, or None."""
        ...

    def remember(self, key: str, outcome: str) -> None: ...


class AppEvents(Protocol):
    """Hands application mail to its application (EventBridge on AWS, a local queue here)."""

    def publish(self, app: str, event_id: str, event: Mapping[str, object]) -> str:
        """Publish one event; returns where it went. Publishing the same id twice is harmless."""
        ...


class Transport(Protocol):
    """Hands a raw message to a mailbox host (SMTP, SES, ...)."""

    @property
    def max_message_bytes(self) -> int | None:
        """The largest message it takes (None: no limit known beforehand)."""
        ...

    @property
    def requires_verified_sender(self) -> bool:
        """Whether it sends only from verified identities (SES), so the sender policy applies."""
        ...

    def send(
        self, envelope_sender: str, recipients: Sequence[str], raw: bytes
    ) -> Mapping[str, SendResult]: ...


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    transient: bool = False
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """The records of one DNS question. No records with `exists` false is NXDOMAIN; with
    `exists` true, the name is there without records of that type (NODATA)."""

    records: tuple[str, ...] = ()
    ttl: float = 0.0
    exists: bool = True


class DnsFailure(TransientError):  # noqa: N818 -- RFC 7208 calls it a DNS failure
    """No answer could be had (timeout, SERVFAIL, refused): a temporary error, never "none"."""


class Resolver(Protocol):
    """DNS lookups for sender authentication. `rrtype` is A, AAAA, MX, TXT or PTR (for PTR,
    `name` is the IP address). TXT records come back with their strings joined, MX records as
    their exchange names by preference, names without the final dot."""

    def query(self, name: str, rrtype: str) -> DnsAnswer:
        """Raises DnsFailure when no answer could be had."""
        ...


class DeadLetters(Protocol):
    def put(self, record_id: str, record: Mapping[str, object]) -> None: ...

    def list(self) -> Iterator[tuple[str, dict[str, object]]]: ...

    def get(self, record_id: str) -> dict[str, object] | None: ...

    def remove(self, record_id: str) -> None: ...


class Deferrals(Protocol):
    """Deliveries waiting for their next attempt (SQLite here, an SQS queue with delays on AWS)."""

    def schedule(self, record_id: str, due_at: datetime, document: Mapping[str, object]) -> None:
        """Run `document` (a deferred delivery) again at `due_at`; the same id twice is one."""
        ...


class Hooks(Protocol):
    """Post-ingress hooks of the routes file (a Lambda function, a command, an HTTP endpoint)."""

    def call(self, hook: str, event_id: str, event: Mapping[str, object]) -> str:
        """Run one hook with the event; returns what happened. Raises TransientError or
        PermanentError (or PolicyError when the hook has no target on this runtime)."""
        ...


class Webhooks(Protocol):
    def post(self, url: str, secret: str, event_id: str, body: bytes, timeout: float) -> str: ...


class Archive(Protocol):
    """An archive's index: the local SQLite FTS index, or Mail Manager's archive API."""

    def search(self, query: ArchiveQuery) -> list[ArchivedMessage]:
        """At most `query.limit` matches, newest first."""
        ...

    def get(self, archived_message_id: str) -> ArchivedMessage | None: ...

    def raw(self, archived_message_id: str) -> bytes:
        """The message as archived (raises PermanentError when it is not there)."""
        ...


class Arrivals(Protocol):
    """The two halves of each message reaching the AWS pipeline (workflow.arrival)."""

    def record(self, arrival: Arrival) -> tuple[ArrivalRecord, bool]:
        """Keep this half (once: a replayed half changes nothing); return all that is known of
        the message's arrival, this half included, and whether this half is new."""
        ...

    def get(self, message_id: str) -> ArrivalRecord | None: ...


class Executions(Protocol):
    """Starts workflow executions (Step Functions on AWS)."""

    def start(self, name: str, document: Mapping[str, object]) -> str:
        """Start one execution named after `name` (the same name with the same document again
        is harmless); returns the execution's name."""
        ...


class ArrivalChecks(Protocol):
    def schedule(self, message_id: str) -> None:
        """Look at this message's arrival again later (workflow.arrival.check)."""
        ...
