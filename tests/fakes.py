"""Test doubles: a manual clock, a scripted transport, and in-memory implementations of the
state and object ports (the contract suites in tests/contracts run them beside the real
adapters)."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

from mxgate.errors import PermanentError
from mxgate.message.raw import RawMessage
from mxgate.ports import Clock, ObjectInfo, SendResult
from mxgate.records import DeadLetter, Deferred, Outcome, RecipientState, Stage, TimelineEvent


@dataclass
class ManualClock:
    """Time moves only when the code sleeps or the test says so."""

    current: datetime = field(default_factory=lambda: datetime(2026, 11, 28, 9, 0, tzinfo=UTC))
    slept: list[float] = field(default_factory=list)

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.current += timedelta(seconds=max(0.0, seconds))

    def advance(self, seconds: float) -> None:
        """Time passes without anyone sleeping (a test waiting for a due time)."""
        self.current += timedelta(seconds=seconds)


@dataclass
class RecordingTransport:
    """Answers each recipient with a scripted result (default: accepted) and records sends."""

    script: dict[str, list[SendResult]] = field(default_factory=dict)
    sent: list[tuple[str, tuple[str, ...], bytes]] = field(default_factory=list)  # every attempt
    delivered: dict[str, list[bytes]] = field(default_factory=dict)  # what each recipient got
    max_message_bytes: int | None = None
    requires_verified_sender: bool = False

    def send(
        self,
        envelope_sender: str,
        recipients: Sequence[str],
        raw: RawMessage,
        tags: Mapping[str, str] | None = None,
    ) -> Mapping[str, SendResult]:
        data = raw.read()
        self.sent.append((envelope_sender, tuple(recipients), data))
        results = {}
        for recipient in recipients:
            queue = self.script.get(recipient)
            results[recipient] = queue.pop(0) if queue else SendResult(ok=True, detail="250 OK")
            if results[recipient].ok:
                self.delivered.setdefault(recipient, []).append(data)
        return results


class MemoryObjectStore:
    """The ObjectStore port in a dict: what the port promises, and nothing else."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, dict[str, str]]] = {}

    def put(
        self,
        bucket: str,
        key: str,
        body: bytes | BinaryIO,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        data = body if isinstance(body, bytes) else body.read()
        self.objects[(bucket, key)] = (data, dict(metadata or {}))
        return ObjectInfo(bucket, key, len(data), dict(metadata or {}))

    def _found(self, bucket: str, key: str) -> tuple[bytes, dict[str, str]]:
        if (bucket, key) not in self.objects:
            raise PermanentError(f"no object {bucket}/{key}")
        return self.objects[(bucket, key)]

    def head(self, bucket: str, key: str) -> ObjectInfo:
        body, metadata = self._found(bucket, key)
        return ObjectInfo(bucket, key, len(body), metadata)

    def open(self, bucket: str, key: str) -> BinaryIO:
        return io.BytesIO(self._found(bucket, key)[0])

    def get(self, bucket: str, key: str) -> bytes:
        return self._found(bucket, key)[0]

    def exists(self, bucket: str, key: str) -> bool:
        return (bucket, key) in self.objects

    def copy(self, source_bucket: str, source_key: str, bucket: str, key: str) -> None:
        body, metadata = self._found(source_bucket, source_key)
        self.objects[(bucket, key)] = (body, dict(metadata))

    def delete(self, bucket: str, key: str) -> None:
        self.objects.pop((bucket, key), None)

    def link(self, bucket: str, key: str, expires_at: datetime | None = None) -> str:
        until = f"?until={expires_at.isoformat()}" if expires_at else ""
        return f"memory://{bucket}/{key}{until}"


class MemoryState:
    """The Timeline, Idempotency, DeadLetters and Deferrals ports in dicts: the executable
    statement of what the SQLite and DynamoDB adapters must do alike (tests/contracts)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._events: list[TimelineEvent] = []
        self._states: dict[tuple[str, str], RecipientState] = {}
        self._keys: dict[str, str] = {}
        self._dead: dict[str, DeadLetter] = {}
        self._deferred: dict[str, Deferred] = {}
        self._leased: dict[str, datetime] = {}

    # Timeline
    def record(self, event: TimelineEvent) -> None:
        self._events.append(event)

    def record_many(self, events: Sequence[TimelineEvent]) -> None:
        self._events.extend(events)

    def settle(self, state: RecipientState) -> bool:
        key = (state.message_id, state.recipient.casefold())
        if key in self._states:
            return False
        self._states[key] = state
        self._events.append(state.event())
        return True

    def revise(self, state: RecipientState, replaces: frozenset[Outcome]) -> bool:
        key = (state.message_id, state.recipient.casefold())
        before = self._states.get(key)
        if before is None or before.outcome not in replaces:
            return False
        self._states[key] = state
        self._events.remove(before.event())
        self._events.append(state.event())
        return True

    def reopen(self, message_id: str, recipient: str) -> None:
        self._states.pop((message_id, recipient.casefold()), None)

    def states(self, message_id: str) -> list[RecipientState]:
        return [s for (m, _), s in sorted(self._states.items()) if m == message_id]

    def events(self, message_id: str) -> list[TimelineEvent]:
        return sorted((e for e in self._events if e.message_id == message_id), key=lambda e: e.at)

    def recent(self, limit: int) -> list[str]:
        entered = [e for e in self._events if e.stage in (Stage.ACCEPTED, Stage.PARSED)]
        newest = sorted(entered, key=lambda e: e.at, reverse=True)
        return list(dict.fromkeys(e.message_id for e in newest))[:limit]

    # Idempotency
    def seen(self, key: str) -> str | None:
        return self._keys.get(key)

    def remember(self, key: str, outcome: str) -> None:
        self._keys[key] = outcome

    # DeadLetters
    def put(self, record: DeadLetter) -> None:
        self._dead[record.record_id] = record

    def list(self) -> Iterator[DeadLetter]:
        return iter([self._dead[k] for k in sorted(self._dead)])

    def get(self, record_id: str) -> DeadLetter | None:
        return self._dead.get(record_id)

    def remove(self, record_id: str) -> None:
        self._dead.pop(record_id, None)

    # Deferrals
    def schedule(self, record: Deferred) -> None:
        self._deferred[record.record_id] = record
        self._leased.pop(record.record_id, None)

    def lease_due(self, now: datetime, lease_seconds: float, limit: int = 50) -> list[Deferred]:
        due = [
            r
            for r in sorted(self._deferred.values(), key=lambda r: r.due_at)
            if r.due_at <= now and self._leased.get(r.record_id, now) <= now
        ][:limit]
        for record in due:
            self._leased[record.record_id] = now + timedelta(seconds=lease_seconds)
        return due

    def finish_deferred(self, record_id: str) -> None:
        self._deferred.pop(record_id, None)
        self._leased.pop(record_id, None)
