"""Moments operators type: `--since 1h`, `--until 2026-11-28T08:00`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mxgate.routing.routes import DURATION_FORMS, parse_duration


@dataclass(frozen=True)
class Moment:
    """A moment as typed, before a clock says what now is: a time, or a duration back."""

    at: datetime | None = None
    back: timedelta = timedelta()

    def resolve(self, now: datetime) -> datetime:
        return self.at if self.at is not None else now - self.back


def parse_moment(value: str) -> Moment:
    """An ISO time (UTC when it names no zone), a date, or a duration back from now
    (`90s`, `30m`, `1h`, `7d`). Raises ValueError saying which forms it takes."""
    text = value.strip()
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        try:
            seconds = parse_duration(text)
        except ValueError:
            seconds = None
        if not isinstance(seconds, float):
            raise ValueError(
                f"{value!r} is neither a time (2026-11-28, 2026-11-28T08:00:00+00:00) nor a "
                f"duration back from now ({DURATION_FORMS})"
            ) from None
        return Moment(back=timedelta(seconds=seconds))
    return Moment(at=found if found.tzinfo is not None else found.replace(tzinfo=UTC))


def moment(value: str, now: datetime) -> datetime:
    """`parse_moment`, resolved at `now`."""
    return parse_moment(value).resolve(now)
