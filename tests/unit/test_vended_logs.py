"""The vended logs are best effort, as Mail Manager's are: a record the disk cannot take is
dropped and said once, and the mail flow goes on (a full disk once failed RCPT with it)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from mxgate.local.logs import TRAFFIC_POLICY, VendedLogs


def test_a_record_the_disk_cannot_take_is_dropped_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs = VendedLogs(tmp_path)
    (tmp_path / TRAFFIC_POLICY).symlink_to("/dev/full")  # every write: ENOSPC
    with caplog.at_level(logging.WARNING, logger="mxgate.logs"):
        logs.write(TRAFFIC_POLICY, {"recipient": "alice@nutrition.co"})
        logs.write(TRAFFIC_POLICY, {"recipient": "bob@nutrition.co"})
    dropped = [r for r in caplog.records if r.getMessage() == "vended log records dropped for now"]
    assert len(dropped) == 1
    assert dropped[0].__dict__["file"] == TRAFFIC_POLICY

    (tmp_path / TRAFFIC_POLICY).unlink()  # room again: records are written, and a later
    logs.write(TRAFFIC_POLICY, {"recipient": "carol@nutrition.co"})  # failure is said again
    assert json.loads((tmp_path / TRAFFIC_POLICY).read_text()) == {
        "recipient": "carol@nutrition.co"
    }
    (tmp_path / TRAFFIC_POLICY).unlink()
    (tmp_path / TRAFFIC_POLICY).symlink_to("/dev/full")
    with caplog.at_level(logging.WARNING, logger="mxgate.logs"):
        logs.write(TRAFFIC_POLICY, {"recipient": "dave@nutrition.co"})
    dropped = [r for r in caplog.records if r.getMessage() == "vended log records dropped for now"]
    assert len(dropped) == 2


def lines(path: Path) -> list[str]:
    return [json.loads(line)["recipient"] for line in path.read_text().splitlines()]


def test_records_land_in_order_and_after_a_removal_or_a_rotation_in_the_new_file(
    tmp_path: Path,
) -> None:
    """The file is kept open between records; one removed or rotated away is not written on:
    the next record makes the file again at its path."""
    logs = VendedLogs(tmp_path)
    path = tmp_path / TRAFFIC_POLICY
    logs.write(TRAFFIC_POLICY, {"recipient": "alice@nutrition.co"})
    logs.write_all(TRAFFIC_POLICY, [{"recipient": "bob@nutrition.co"}, {"recipient": "carol"}])
    assert lines(path) == ["alice@nutrition.co", "bob@nutrition.co", "carol"]

    path.rename(tmp_path / f"{TRAFFIC_POLICY}.1")  # logrotate's way: moved, then a new file
    logs.write(TRAFFIC_POLICY, {"recipient": "dave@nutrition.co"})
    assert lines(path) == ["dave@nutrition.co"]
    assert lines(tmp_path / f"{TRAFFIC_POLICY}.1")[-1] == "carol"

    path.unlink()
    logs.write(TRAFFIC_POLICY, {"recipient": "erin@nutrition.co"})
    assert lines(path) == ["erin@nutrition.co"]

    path.unlink()  # a file someone else made meanwhile is appended to, not replaced
    path.write_text(json.dumps({"recipient": "frank"}) + "\n")
    logs.write(TRAFFIC_POLICY, {"recipient": "grace@nutrition.co"})
    assert lines(path) == ["frank", "grace@nutrition.co"]


def test_two_writers_of_one_file_share_it_record_by_record(tmp_path: Path) -> None:
    """Two processes' logs (here two instances, each with its own open file) interleave whole
    records: the file is opened for appending, each record one write."""
    first, second = VendedLogs(tmp_path), VendedLogs(tmp_path)
    for index in range(3):
        first.write(TRAFFIC_POLICY, {"recipient": f"first{index}"})
        second.write(TRAFFIC_POLICY, {"recipient": f"second{index}"})
    assert lines(tmp_path / TRAFFIC_POLICY) == [
        name for index in range(3) for name in (f"first{index}", f"second{index}")
    ]


def test_a_file_is_opened_once_for_many_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One open file a log, not an open and a close a record (a seventh of the ingress's
    CPU a message was that)."""
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: str | os.PathLike[str], *args: int) -> int:
        opened.append(os.fspath(path))
        return real_open(path, *args)

    logs = VendedLogs(tmp_path)
    monkeypatch.setattr(os, "open", counting_open)
    for index in range(50):
        logs.write(TRAFFIC_POLICY, {"recipient": f"r{index}"})
    assert opened == [str(tmp_path / TRAFFIC_POLICY)]
    assert len(lines(tmp_path / TRAFFIC_POLICY)) == 50
