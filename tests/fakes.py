"""Test doubles for the ports that would otherwise leave the machine, and a manual clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from mxgate.ports import SendResult


@dataclass
class ManualClock:
    """Time moves only when the code sleeps or the test says so."""

    current: datetime = field(default_factory=lambda: datetime(2026, 11, 28, 9, 0, tzinfo=UTC))
    slept: list[float] = field(default_factory=list)

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.current += timedelta(seconds=seconds)


@dataclass
class RecordingTransport:
    """Answers each recipient with a scripted result (default: accepted) and records sends."""

    script: dict[str, list[SendResult]] = field(default_factory=dict)
    sent: list[tuple[str, tuple[str, ...], bytes]] = field(default_factory=list)
    max_message_bytes: int | None = None
    requires_verified_sender: bool = False

    def send(
        self,
        envelope_sender: str,
        recipients: Sequence[str],
        raw: bytes,
        tags: Mapping[str, str] | None = None,
    ) -> Mapping[str, SendResult]:
        self.sent.append((envelope_sender, tuple(recipients), raw))
        results = {}
        for recipient in recipients:
            queue = self.script.get(recipient)
            results[recipient] = queue.pop(0) if queue else SendResult(ok=True, detail="250 OK")
        return results
