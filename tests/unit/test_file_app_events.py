"""FileAppEvents: an event is on disk, name and all, before `handed_to_app` is recorded, and
what it points at (the message's objects) is made durable before it is written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mxgate.adapters.local.appevents import FileAppEvents
from tests.support import fsynced_paths

EVENT = {"version": "1", "message_id": "01APP", "recipient": "orders@x.example"}


def test_the_objects_are_made_durable_before_the_event_is_written(tmp_path: Path) -> None:
    path = tmp_path / "orders" / "01APP.orders_x.example.json"
    seen: list[bool] = []
    events = FileAppEvents(tmp_path, before_publish=lambda: seen.append(path.exists()))
    where = events.publish("orders", "01APP.orders/x.example", EVENT)
    assert seen == [False]  # called once, before the event's file existed
    assert where == str(path)
    assert json.loads(path.read_text()) == EVENT


def test_an_event_is_fsynced_with_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsynced = fsynced_paths(monkeypatch)
    where = FileAppEvents(tmp_path).publish("orders", "01APP.orders@x.example", EVENT)
    assert fsynced[-1] == os.path.dirname(where)  # the name, after the file's own fsync
    assert len(fsynced) == 2
