"""The Received field's date, written at once for a UTC time, is the standard library's
`format_datetime` to the byte (any other zone, or none, goes to it)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from mxgate.message.received import _date, received_value


def test_a_utc_time_is_written_as_format_datetime_writes_it() -> None:
    rng = random.Random(12)
    start = datetime(1970, 1, 1, tzinfo=UTC)
    for _ in range(20_000):
        when = start + timedelta(
            seconds=rng.randrange(6 * 10**9), microseconds=rng.randrange(10**6)
        )
        assert _date(when) == format_datetime(when)


@pytest.mark.parametrize(
    "zone", [timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30)), None]
)
def test_another_zone_or_none_is_format_datetimes(zone: timezone | None) -> None:
    when = datetime(2026, 12, 1, 9, 5, 3, tzinfo=zone)
    assert _date(when) == format_datetime(when)


def test_the_received_field_ends_in_the_date() -> None:
    when = datetime(2026, 12, 1, 9, 5, 3, tzinfo=UTC)
    value = received_value(
        helo="a.example", ip="192.0.2.1", by="mx.example", message_id="M1", when=when
    )
    assert value.endswith("; Tue, 01 Dec 2026 09:05:03 +0000")
