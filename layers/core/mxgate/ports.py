"""The ports the core talks through. Each runtime's composition root supplies adapters:
files and SQLite on one machine, S3, DynamoDB, SES, SQS and EventBridge on AWS."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable

from mxgate.errors import TransientError

if TYPE_CHECKING:  # the records' models are the adapters' to import (a cold start's cost)
    from mxgate.message.raw import RawMessage
    from mxgate.records import (
        DeadLetter,
        Deferred,
        Outcome,
        QuarantineRecord,
        RecipientState,
        TimelineEvent,
    )
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
        self,
        bucket: str,
        key: str,
        body: bytes | BinaryIO,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store `body`: bytes, or a readable stream copied in chunks (a message)."""
        ...

    def head(self, bucket: str, key: str) -> ObjectInfo: ...

    def open(self, bucket: str, key: str) -> BinaryIO:
        """A readable stream of the object, so large messages need not sit in memory."""
        ...

    def get(self, bucket: str, key: str) -> bytes: ...

    def exists(self, bucket: str, key: str) -> bool: ...

    def copy(self, source_bucket: str, source_key: str, bucket: str, key: str) -> None:
        """Store another object's bytes and metadata under `bucket`/`key`, without them passing
        through the caller (S3's CopyObject; a hard link on one machine). The two are separate
        objects: deleting either leaves the other."""
        ...

    def delete(self, bucket: str, key: str) -> None:
        """Remove the object; one that is gone already is no error."""
        ...

    def link(self, bucket: str, key: str, expires_at: datetime | None = None) -> str:
        """Where an application or a recipient can fetch the object (a file URI, a signed
        download link), working until `expires_at` (None: the adapter's own lifetime)."""
        ...


@runtime_checkable
class FileLinks(Protocol):
    """What an object store on the spool's own file system can do besides: take a file as an
    object without copying its bytes (the local store; S3 has no such thing)."""

    def link_file(self, path: str, bucket: str, key: str) -> bool:
        """`bucket`/`key` becomes another name of the file at `path`, which is never written
        again; False where it cannot (another file system, no hard links, the file gone): the
        caller stores the bytes."""
        ...


class Timeline(Protocol):
    """A message's events in time order (events recorded together keep their order), and each
    recipient's terminal state, which `events` also shows as its one `terminal` event."""

    def record(self, event: TimelineEvent) -> None: ...

    def record_many(self, events: Sequence[TimelineEvent]) -> None: ...

    def settle(self, state: RecipientState) -> bool:
        """Record a recipient's terminal state; False if it already had one (first one wins)."""
        ...

    def revise(self, state: RecipientState, replaces: frozenset[Outcome]) -> bool:
        """Replace a recipient's terminal state with `state`, only if it is one of `replaces`
        (a provider's later report); False if it is not, or there is none."""
        ...

    def reopen(self, message_id: str, recipient: str) -> None:
        """Forget a recipient's terminal state, so a redriven delivery can settle it anew."""
        ...

    def states(self, message_id: str) -> list[RecipientState]: ...

    def events(self, message_id: str) -> list[TimelineEvent]: ...

    def recent(self, limit: int) -> list[str]:
        """Messages accepted (or parsed, on AWS) lately, newest first."""
        ...


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
        self,
        envelope_sender: str,
        recipients: Sequence[str],
        raw: RawMessage,
        tags: Mapping[str, str] | None = None,
    ) -> Mapping[str, SendResult]:
        """`raw` is read in chunks as it is sent. `tags` name what is sent (message, route)
        where the transport can carry them to its later reports (SES message tags); others
        ignore them."""
        ...


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    transient: bool = False
    detail: str = ""
    # accepted by a relay that reports later what the mailbox host did (SES): the recipient
    # ends `relayed`, and the report moves it on
    relayed: bool = False


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
    """DNS lookups for sender authentication. `rrtype` is A, AAAA, MX, TXT, CNAME or PTR (for
    PTR, `name` is the IP address). TXT records come back with their strings joined, MX records
    as their exchange names by preference, names without the final dot."""

    def query(self, name: str, rrtype: str) -> DnsAnswer:
        """Raises DnsFailure when no answer could be had."""
        ...


class DeadLetters(Protocol):
    """What could not be completed, kept for `mxgate dlq` (show, redrive)."""

    def put(self, record: DeadLetter) -> None:
        """Keep the record under its id; one of the same id is written over."""
        ...

    def list(self) -> Iterator[DeadLetter]: ...

    def get(self, record_id: str) -> DeadLetter | None: ...

    def remove(self, record_id: str) -> None: ...


class Deferrals(Protocol):
    """Work waiting for its next attempt (SQLite here, an SQS queue with delays on AWS)."""

    def schedule(self, record: Deferred) -> None:
        """Run the record again at its `due_at`. The same id again replaces the record where
        the store keeps records (SQLite); a queue (SQS) may hand out both, which is harmless:
        the work is idempotent. AWS defers deliveries and stored messages for Process (Mail
        Manager runs the rules)."""
        ...


class Hooks(Protocol):
    """Post-ingress hooks of the routes file (a Lambda function, a command, an HTTP endpoint)."""

    def call(self, hook: str, event_id: str, event: Mapping[str, object]) -> str:
        """Run one hook with the event; returns what happened. Raises TransientError or
        PermanentError (or PolicyError when the hook has no target on this runtime)."""
        ...


class Webhooks(Protocol):
    def post(self, url: str, secret: str, event_id: str, body: bytes, timeout: float) -> str: ...


# ----------------------------------------------------------------------------- rule actions
# What Mail Manager's rule actions reach beyond the object store and the transports: the local
# runtime supplies files and in-process handlers; another runtime can supply AWS-backed ones.


class Functions(Protocol):
    """Lambda functions an InvokeLambda action calls."""

    def check(self, function_arn: str) -> None:
        """Raise PermanentError when the function cannot be invoked (unknown, not loadable)."""
        ...

    def invoke(self, function_arn: str, event: Callable[[], Mapping[str, Any]]) -> Any:
        """The function's result; what the function raises propagates. `event` builds the
        event the function gets, only when it reads one."""
        ...


class Topics(Protocol):
    """SNS topics a PublishToSns action publishes to."""

    def publish(self, topic_arn: str, subject: str, message: str) -> str:
        """Publish one notification; returns where it went."""
        ...


class Mailboxes(Protocol):
    """WorkMail mailboxes a DeliverToMailbox action delivers to."""

    def deliver(
        self, mailbox_arn: str, envelope_sender: str, recipient: str, raw: RawMessage
    ) -> str:
        """Deliver one recipient's copy; returns where it went. Raises OSError or
        TransientError when this may pass."""
        ...


class Quarantine(Protocol):
    """Where quarantine records are kept (SQLite here, the state table on AWS)."""

    def hold(self, record: QuarantineRecord) -> None:
        """Keep a record; one for the same message already there gains its recipients."""
        ...

    def get(self, quarantine_id: str) -> QuarantineRecord | None: ...

    def records(self) -> Iterator[QuarantineRecord]: ...

    def replace(self, record: QuarantineRecord) -> None: ...

    def remove(self, quarantine_id: str) -> None: ...


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
