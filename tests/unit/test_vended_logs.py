"""The vended logs are best effort, as Mail Manager's are: a record the disk cannot take is
dropped and said once, and the mail flow goes on (a full disk once failed RCPT with it)."""

from __future__ import annotations

import json
import logging
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
