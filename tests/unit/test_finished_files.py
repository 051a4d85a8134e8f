"""`spool.FinishedFiles`: what the gateway's look takes goes after one `make_durable`, or,
when that fails, waits again, ahead of what was handed back meanwhile."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxgate.local.spool import FinishedFiles


def files(tmp_path: Path, *names: str) -> list[str]:
    paths = [tmp_path / name for name in names]
    for path in paths:
        path.write_bytes(b"x")
    return [str(path) for path in paths]


def test_what_a_look_took_goes_after_the_fsync_and_a_failed_one_waits_again(
    tmp_path: Path,
) -> None:
    calls: list[list[bool]] = []
    failing = True

    def make_durable() -> None:
        calls.append([Path(p).exists() for p in first])
        if failing:
            raise OSError(5, "Input/output error")

    finished = FinishedFiles(make_durable)
    first = files(tmp_path, "a.msg", "b.msg")
    finished.add(first)
    taken = finished.take()
    finished.add(files(tmp_path, "c.msg"))  # handed back while the look runs
    assert len(finished) == 3
    assert finished.names() == {tmp_path / n for n in ("a.msg", "b.msg", "c.msg")}
    with pytest.raises(OSError, match="Input/output"):
        finished.remove(taken)
    finished.done(removed=False)
    assert all(Path(p).exists() for p in first)
    assert finished.waiting == [tmp_path / n for n in ("a.msg", "b.msg", "c.msg")]

    failing = False
    taken = finished.take()
    finished.remove(taken)
    finished.done(removed=True)
    assert calls == [[True, True], [True, True]]  # each fsync came before any unlink
    assert not any((tmp_path / n).exists() for n in ("a.msg", "b.msg", "c.msg"))
    assert len(finished) == 0
