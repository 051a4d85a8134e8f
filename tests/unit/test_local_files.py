"""write_atomically: readers see the old file or the new one, and a write that fails leaves
no temporary file behind (on a full disk, its space is what the next write needs)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from mxgate.adapters.local.files import write_atomically
from tests.support import fsynced_paths


def test_a_write_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "bucket" / "object"
    write_atomically(target, b"first")
    write_atomically(target, b"second", durable=True)
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["object"]


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "object"
    target.mkdir()  # the rename onto a directory fails after the body is written
    (target / "inside").write_bytes(b"kept")
    with pytest.raises(IsADirectoryError):
        write_atomically(target, b"x" * 100_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["object"]


def test_a_new_file_leaves_no_other_name_in_its_directory(tmp_path: Path) -> None:
    """Written with no name and then linked (where the file system can): nothing but the
    file itself ever appears beside it, and its parent is made when missing."""
    target = tmp_path / "bucket" / "new" / "object"
    assert write_atomically(target, io.BytesIO(b"streamed " * 10_000)) == 90_000
    assert target.read_bytes() == b"streamed " * 10_000
    assert os.listdir(target.parent) == ["object"]
    assert os.stat(target).st_nlink == 1


def test_a_durable_write_fsyncs_the_file_then_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its name is on disk too: the directory's fsync comes after the rename."""
    target = tmp_path / "events" / "event.json"
    fsynced = fsynced_paths(monkeypatch)
    write_atomically(target, b"{}", durable=True)
    assert len(fsynced) == 2
    assert os.path.dirname(fsynced[0]) == str(target.parent)  # the temporary name, renamed
    assert fsynced[1] == str(target.parent)


def test_a_write_that_need_not_be_durable_fsyncs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsynced = fsynced_paths(monkeypatch)
    write_atomically(tmp_path / "object", b"body")
    assert fsynced == []
