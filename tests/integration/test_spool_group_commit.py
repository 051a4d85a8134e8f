"""The spool's group commit: the ingress's messages committed together share one directory
fsync, and each one's answer (its `250`) comes only after its links, its file's fsync and a
directory fsync begun after that link. Real files; the spool's fsyncs are noted as they run."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from pathlib import Path

import pytest

from mxgate.local.history import History
from mxgate.local.spool import ENVELOPE_ATTRIBUTE, Spool
from mxgate.records import Envelope


class NotingSpool(Spool):
    """A real spool that notes, in order, each link and each directory fsync (its start and
    its end); the first directory fsync waits for the test's word, so commits pile up."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.events: list[tuple[str, str]] = []
        self.first_sync = threading.Event()
        self.go_on = threading.Event()
        self.fail_sync = False

    def sync_directory(self, opened: int | None = None) -> None:
        self.events.append(("sync", "start"))
        if not self.first_sync.is_set():
            self.first_sync.set()
            assert self.go_on.wait(10)
        if self.fail_sync:
            raise OSError(28, "No space left on device")
        super().sync_directory(opened)
        self.events.append(("sync", "end"))


def no_partial_left(spool: Spool) -> bool:
    """The temporary names go after the answers, in the commit thread: wait for them."""
    for _ in range(500):
        if not list(spool.directory.glob("*.partial")):
            return True
        threading.Event().wait(0.01)
    return False


def envelope(n: int) -> Envelope:
    return Envelope(
        message_id=f"01GROUPCOMMIT{n:013d}", mail_from="a@b.example", recipients=["c@d.example"]
    )


async def commit_all(spool: NotingSpool, count: int) -> list[Path | BaseException]:
    """One commit alone (held in its directory fsync), then `count` more meanwhile."""
    linked_names: list[str] = []

    def noting_link(writer_link, writer):  # type: ignore[no-untyped-def]
        def link() -> Path:
            path: Path = writer_link()
            spool.events.append(("link", writer.envelope.message_id))
            linked_names.append(path.name)
            return path

        return link

    writers = []
    for n in range(count + 1):
        writer = spool.receive(envelope(n))
        writer.write(b"Subject: %d\r\n\r\nHello.\r\n" % n)
        writer.link = noting_link(writer.link, writer)  # type: ignore[method-assign]
        writers.append(writer)
    first = spool.group_commit.commit(writers[0])
    await asyncio.to_thread(spool.first_sync.wait, 10)
    rest = [spool.group_commit.commit(w) for w in writers[1:]]
    spool.go_on.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_the_messages_waiting_share_one_directory_fsync_begun_after_their_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    spool = NotingSpool(tmp_path / "spool")
    monkeypatch.setattr(spool.group_commit, "THREADS", 1)  # all eight wait for the one thread
    paths = asyncio.run(commit_all(spool, 8))

    assert all(isinstance(p, Path) for p in paths)
    for n, path in enumerate(paths):
        assert isinstance(path, Path)
        assert path.name == f"{envelope(n).message_id}.msg"
        spooled = os.getxattr(path, ENVELOPE_ATTRIBUTE)  # the file holds the message alone
        assert Envelope.model_validate_json(spooled).message_id == envelope(n).message_id
        assert path.read_bytes() == b"Subject: %d\r\n\r\nHello.\r\n" % n
    assert no_partial_left(spool)
    syncs = [e for e in spool.events if e == ("sync", "start")]
    assert len(syncs) == 2  # the first message's, then one for the eight that waited
    # every link comes before the start of a directory fsync that then ended
    for n in range(9):
        linked = spool.events.index(("link", envelope(n).message_id))
        later = spool.events[linked:]
        assert ("sync", "start") in later
        assert ("sync", "end") in later[later.index(("sync", "start")) :]


def test_a_commit_held_by_a_slow_disk_does_not_hold_the_next_one(tmp_path: Path):
    """A second thread takes what waits while the first is in its fsyncs."""
    spool = NotingSpool(tmp_path / "spool")

    async def commit_two() -> None:
        held, other = spool.receive(envelope(1)), spool.receive(envelope(2))
        held.write(b"Subject: held\r\n\r\n")
        other.write(b"Subject: other\r\n\r\n")
        first = spool.group_commit.commit(held)
        await asyncio.to_thread(spool.first_sync.wait, 10)
        second = await asyncio.wait_for(spool.group_commit.commit(other), 10)
        assert not first.done()
        assert second.read_bytes().endswith(b"Subject: other\r\n\r\n")
        spool.go_on.set()
        assert (await first).read_bytes().endswith(b"Subject: held\r\n\r\n")

    asyncio.run(commit_two())


def test_a_failed_directory_fsync_fails_every_message_of_its_batch_and_keeps_the_files(
    tmp_path: Path,
):
    """Linked but not known durable: each message gets its 451 (the client sends it again);
    the files stay and are replayed on the next start, so nothing answered 250 depends on it."""
    spool = NotingSpool(tmp_path / "spool")
    spool.fail_sync = True
    answers = asyncio.run(commit_all(spool, 3))
    assert all(isinstance(a, OSError) for a in answers)
    assert len(spool.pending()) == 4


def test_a_link_refused_fails_its_own_message_only(tmp_path: Path):
    """A message id already spooled (FileExistsError, the 451 of a collision) does not fail the
    other messages committed with it."""
    spool = Spool(tmp_path / "spool")
    spool.write(envelope(1), b"Subject: first\r\n\r\n")

    async def commit_three() -> list[Path | BaseException]:
        commits = []
        for n in range(3):
            writer = spool.receive(envelope(n))
            writer.write(b"Subject: again\r\n\r\n")
            commits.append(spool.group_commit.commit(writer))
        return await asyncio.gather(*commits, return_exceptions=True)

    first, collided, third = asyncio.run(commit_three())
    assert isinstance(first, Path)
    assert isinstance(third, Path)
    assert isinstance(collided, FileExistsError)
    assert (
        (spool.directory / f"{envelope(1).message_id}.msg")
        .read_bytes()
        .endswith(b"Subject: first\r\n\r\n")
    )
    assert no_partial_left(spool)


def test_the_commit_thread_ends_when_idle_and_the_next_commit_starts_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    spool = Spool(tmp_path / "spool")
    monkeypatch.setattr(spool.group_commit, "IDLE_SECONDS", 0.01)

    def commit_one(n: int) -> Path:
        async def commit() -> Path:
            writer = spool.receive(envelope(n))
            writer.write(b"Subject: idle\r\n\r\n")
            return await spool.group_commit.commit(writer)

        return asyncio.run(commit())

    name = f"spool-commit {spool.directory}"
    assert commit_one(1).exists()
    for _ in range(500):
        if not any(t.name == name for t in threading.enumerate()):
            break
        threading.Event().wait(0.01)
    assert not any(t.name == name for t in threading.enumerate())
    assert commit_one(2).exists()
    assert os.path.exists(spool.directory / f"{envelope(1).message_id}.msg")


def test_the_history_keeps_a_message_whose_spool_file_went_as_soon_as_it_was_answered(
    tmp_path: Path,
):
    """The history links the file before the answer (a file with no name left cannot be linked
    again): a worker that took the spool file and removed it at once does not keep it from
    the history."""
    history = History(tmp_path / "history", keep_seconds=86400)
    spool = Spool(tmp_path / "spool", history.keep)

    async def commit_and_remove() -> Path:
        writer = spool.receive(envelope(7))
        writer.write(b"Subject: kept\r\n\r\n")
        path = await spool.group_commit.commit(writer)
        spool.remove(path)  # as a quick worker would
        return path

    path = asyncio.run(commit_and_remove())
    assert no_partial_left(spool)
    (kept,) = history.directory.glob(f"*/{path.name}")
    assert kept.read_bytes().endswith(b"Subject: kept\r\n\r\n")


@pytest.mark.parametrize("unnamed", [True, False], ids=["no-name", "temporary-name"])
def test_a_file_is_whole_under_its_name_and_in_the_history_or_nowhere(tmp_path: Path, unnamed):
    """Made with no name (O_TMPFILE) or, where the file system cannot, under a temporary one:
    until its commit, the spool shows nothing a worker would take; after it, the whole file
    under its name, in the history too, and no temporary name left."""
    history = History(tmp_path / "history", keep_seconds=86400)
    spool = Spool(tmp_path / "spool", history.keep)
    spool.unnamed = unnamed and spool.unnamed
    writer = spool.receive(envelope(3))
    writer.write(b"Subject: whole\r\n\r\n")
    writer.flush()
    assert spool.pending() == []
    abandoned = spool.receive(envelope(4))  # a client that left in the middle of DATA
    abandoned.write(b"Subject: half")
    abandoned.discard()

    async def commit() -> Path:
        return await spool.group_commit.commit(writer)

    path = asyncio.run(commit())
    assert spool.pending() == [path]
    assert path.read_bytes().endswith(b"Subject: whole\r\n\r\n")
    (kept,) = history.directory.glob(f"*/{path.name}")
    assert os.stat(kept).st_ino == os.stat(path).st_ino
    assert no_partial_left(spool)
    assert sorted(os.listdir(spool.directory)) == [path.name]


def watch_links_and_fsyncs(monkeypatch: pytest.MonkeyPatch, fail_file_fsync: bool = False):  # type: ignore[no-untyped-def]
    """The real os.link and os.fsync, each call noted once it has run: ("link", the new name)
    and ("fsync", "file" or "directory"); a regular file's fsync fails on request (EIO)."""
    seen: list[tuple[str, object]] = []
    link, fsync = os.link, os.fsync

    def watched_link(source, target, *args, **kwargs):  # type: ignore[no-untyped-def]
        link(source, target, *args, **kwargs)
        seen.append(("link", Path(target)))

    def watched_fsync(fd: int) -> None:
        what = "directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        if fail_file_fsync and what == "file":
            raise OSError(5, "Input/output error")
        fsync(fd)
        seen.append(("fsync", what))

    monkeypatch.setattr(os, "link", watched_link)
    monkeypatch.setattr(os, "fsync", watched_fsync)
    return seen


@pytest.mark.parametrize("unnamed", [True, False], ids=["no-name", "temporary-name"])
@pytest.mark.parametrize("grouped", [True, False], ids=["group-commit", "commit"])
def test_the_file_is_fsynced_after_its_links_and_before_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool, grouped: bool
):
    """Its links first, then its fsync, then the directory's: the file's fsync writes its inode
    with the link count its names need. Before, the fsync came first and the links after, so
    on a file system with no journal the count on disk stayed 0 (a file made with no name has
    none) until a later writeback: a crash could leave the spool's name pointing at an inode
    deemed free, a message answered 250 lost."""
    history = History(tmp_path / "history", keep_seconds=86400)
    spool = Spool(tmp_path / "spool", history.keep)
    spool.unnamed = unnamed and spool.unnamed
    writer = spool.receive(envelope(5))
    writer.write(b"Subject: ordered\r\n\r\n")
    seen = watch_links_and_fsyncs(monkeypatch)

    async def commit() -> Path:
        return await spool.group_commit.commit(writer)

    path = asyncio.run(commit()) if grouped else writer.commit()
    (kept,) = history.directory.glob(f"*/{path.name}")
    assert seen == [
        ("link", path),
        ("link", kept),
        ("fsync", "file"),
        ("fsync", "directory"),
    ]
    assert os.stat(kept).st_ino == os.stat(path).st_ino


@pytest.mark.parametrize("unnamed", [True, False], ids=["no-name", "temporary-name"])
def test_a_failed_file_fsync_leaves_no_name_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
):
    """Linked, then its fsync fails (a failing disk): the message is answered 451 and none of
    its names stays, neither in the spool (a replay would relay bytes the disk may not hold)
    nor in the history (`mxgate rules replay` would count a message never accepted)."""
    history = History(tmp_path / "history", keep_seconds=86400)
    spool = Spool(tmp_path / "spool", history.keep)
    spool.unnamed = unnamed and spool.unnamed
    writer = spool.receive(envelope(6))
    writer.write(b"Subject: refused\r\n\r\n")
    seen = watch_links_and_fsyncs(monkeypatch, fail_file_fsync=True)

    async def commit() -> Path:
        return await spool.group_commit.commit(writer)

    with pytest.raises(OSError, match="Input/output error"):
        asyncio.run(commit())
    assert [what for what, _ in seen] == ["link", "link"]
    assert spool.pending() == []
    assert list(history.directory.glob("*/*")) == []
    assert no_partial_left(spool)
    assert os.listdir(spool.directory) == []
