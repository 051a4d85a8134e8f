"""The ingress spool: each accepted message is one fsynced file before `250` is answered.

File layout: the message bytes exactly as received, the file's whole content, and its envelope
(JSON) in the file's extended attribute `user.mxgate.envelope`, set before the fsync `250`
waits for: the WriteToS3 and Archive objects are then hard links of the spool file
(`FileObjectStore.link_file`), no new inode a message. Where the attribute cannot be set (a file
system without user attributes, an envelope too large for one), the file is written as before:
one line of JSON (the envelope), then the message bytes. A reader tells the two apart by the
attribute alone, so files written either way are read and replayed.

A file stays until its message has been through the rule set and the workflow, so a crash at
any point is recovered by replaying what is left on start. Its modification time is when
the message was accepted: its last byte was written just before the fsync that `250` waits for.

A file is linked under its name whole (every byte written) but just before its fsync: what
scans the spool meanwhile (a new pool's replay after a worker died, `mxgate trace`'s listing)
may see it a few milliseconds before its `250`, as it sees one whose directory fsync failed
(answered 451, replayed); neither loses a message answered 250.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import glob
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from mxgate.adapters.local.files import (
    fsync_directory,
    link_descriptor,
    open_unnamed,
    unnamed_files,
    write_all,
)
from mxgate.message.raw import RawMessage
from mxgate.records import Envelope, Stage, TimelineEvent

if TYPE_CHECKING:
    from mxgate.ports import Timeline

log = logging.getLogger("mxgate.spool")

_SUFFIX = ".msg"
_PARTIAL = ".partial"
WRITE_BUFFER = 256 * 1024  # bytes of a message held before they go to the file
MAX_ENVELOPE_LINE = 1 << 20
_NOATIME = getattr(os, "O_NOATIME", 0)  # Linux's
ENVELOPE_ATTRIBUTE = "user.mxgate.envelope"  # the extended attribute holding the envelope
# what getxattr fails with on a file without the attribute, or a file system without any
_NO_ATTRIBUTE = frozenset({errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP})
# what setxattr fails with on a file system that has no user attributes at all
_NO_ATTRIBUTES = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP})
# A message up to this size is read into memory in one read: the rule set, authentication,
# WriteToS3 and Archive each read it again, which for a file is an open and a read each.
READ_WHOLE = 64 * 1024
_FIRST_READ = READ_WHOLE + 16 * 1024  # a usual envelope line and a message up to READ_WHOLE


def spooled_name(message_id: str) -> str:
    """The spool file's name (the replay history's too)."""
    return f"{message_id}{_SUFFIX}"


def accepted_event(
    path: Path, envelope: Envelope, size: int | None, modified: float | None = None
) -> TimelineEvent:
    """The message's `accepted` event, dated when the ingress answered 250 (the spool file's
    last write, just before). Whoever takes the spool file writes it, not the ingress: the file
    is what is durable before 250, so the ingress never waits on the state database. `size`:
    the message's bytes (None: the file is unreadable); `modified`: the file's modification
    time when the caller has it (`Spool.read_spooled`), else the file is looked at."""
    what = f"{size} bytes" if size is not None else "an unreadable spool file"
    return TimelineEvent(
        message_id=envelope.message_id,
        at=datetime.fromtimestamp(path.stat().st_mtime if modified is None else modified, UTC),
        stage=Stage.ACCEPTED,
        detail=f"{what} from {envelope.source_ip} for {len(envelope.recipients)} recipient(s)",
    )


def not_yet_taken(directory: Path, message_id: str) -> list[TimelineEvent]:
    """The `accepted` events of the spool files in `directory` whose message id starts with
    `message_id` and that no worker has taken yet: between `250` and a worker taking it, the
    file is the message's whole record (`mxgate trace` shows it from here)."""
    return spooled_events(sorted(directory.glob(f"{glob.escape(message_id)}*{_SUFFIX}")))


def spooled_events(paths: Iterable[Path]) -> list[TimelineEvent]:
    """Each spool file's `accepted` event, as the worker that takes it will write it."""
    found = []
    for path in paths:
        try:
            envelope, message = Spool.read(path)
            found.append(accepted_event(path, envelope, message.size))
        except (OSError, ValueError):
            continue  # taken and removed meanwhile, or unreadable: the worker decides
    return found


def untaken(directory: Path, taken: Callable[[str], bool]) -> list[Path]:
    """The spool files no worker has taken yet (`taken`: whether the timeline has the message),
    newest first: what the listings show before the timeline has them."""
    newest = sorted(directory.glob(f"*{_SUFFIX}"), reverse=True)
    return [p for p in newest if not taken(p.name.removesuffix(_SUFFIX))]


def message_events(timeline: Timeline, spool: Path | None, message_id: str) -> list[TimelineEvent]:
    """A message's timeline; before a worker has taken its spool file (in `spool`, on this
    machine), that file's `accepted` event alone. What `mxgate trace` and the console show."""
    events = timeline.events(message_id)
    if events or spool is None:
        return events
    spooled = spooled_events([spool / spooled_name(message_id)])
    return spooled or timeline.events(message_id)  # taken meanwhile: the worker wrote it


def remove_durably(paths: list[Path], make_durable: Callable[[], None]) -> None:
    """Finished spool files go, once `make_durable` (an fsync of the state database's WAL,
    started after their recipients' ends were committed) has made those ends durable: after a
    power cut, an end is on disk or its file is. A failing `make_durable` raises and leaves
    them all (a replay finds each finished: `pipeline._finished_before`)."""
    make_durable()
    for path in paths:
        path.unlink(missing_ok=True)


class FinishedFiles:
    """The spool files `mxgate run`'s workers finished and handed back (`Spool.handing_back`),
    waiting for the gateway's next look (`local/server.py`, CHECKPOINT_EVERY): one fsync of
    the WAL for every file finished since, off the workers' path. The event loop adds and
    takes; a thread removes what was taken (`remove_durably`), and what it could not remove
    is put back for the next look. A file waits one look (CHECKPOINT_EVERY and the look's
    own time); as many wait as the workers finish in that time."""

    def __init__(self, make_durable: Callable[[], None]) -> None:
        self.make_durable = make_durable
        self.waiting: list[Path] = []
        self.removing: list[Path] = []  # taken by the look under way

    def add(self, paths: Iterable[str]) -> None:
        self.waiting.extend(Path(path) for path in paths)

    def take(self) -> list[Path]:
        self.removing, self.waiting = self.waiting, []
        return self.removing

    def remove(self, taken: list[Path]) -> None:
        """In a thread: what `take` gave goes after one fsync started now."""
        remove_durably(taken, self.make_durable)

    def done(self, *, removed: bool) -> None:
        """The look's end: what it took is gone, or (`removed` False) waits for the next."""
        if not removed:
            self.waiting[:0] = self.removing
        self.removing = []

    def __len__(self) -> int:
        return len(self.waiting) + len(self.removing)

    def names(self) -> set[Path]:
        """Every file still waiting: finished, so no replay hands it to a worker again."""
        return {*self.waiting, *self.removing}


class Spool:
    def __init__(
        self, directory: Path, keep: Callable[[Linker, Envelope], None] | None = None
    ) -> None:
        self.directory = directory
        self.path = str(directory)  # a Path joined a message costs more than its system call
        # whether new files are made with no name (O_TMPFILE), then linked from /proc/self/fd
        self.unnamed = unnamed_files()
        # whether the file system takes the envelope as an extended attribute (until it says not)
        self.attributes = True
        # called with what links each new spool file to another name, and its envelope: the
        # replay history links it
        self.keep = keep
        self.group_commit = GroupCommit(self)  # how the ingress's event loop commits
        self._to_remove: list[Path] | None = None  # what `remove` was given within `removed_after`
        self._handed_back: list[Path] | None = None  # what it left, within `handing_back`
        self._unsettled: set[Path] = set()  # of `_to_remove`: not to be handed back
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, envelope: Envelope, raw: bytes) -> Path:
        """Durably store one message whose bytes are all at hand (`receive` when they stream)."""
        writer = self.receive(envelope)
        writer.write(raw)
        return writer.commit()

    def receive(self, envelope: Envelope) -> SpoolWriter:
        """A spool file for one message, written as its bytes arrive; `commit` makes it durable
        and visible to the workers, `discard` throws it away."""
        return SpoolWriter(self, envelope)

    def discard_partial(self) -> None:
        """Remove files a crash left half-written: none of them was ever answered 250."""
        for leftover in self.directory.glob(f"*{_PARTIAL}"):
            leftover.unlink(missing_ok=True)

    @staticmethod
    def read(path: Path) -> tuple[Envelope, RawMessage]:
        """The envelope, and the message: read whole when it is small (`READ_WHOLE`), else its
        header section now and its body from the file on use."""
        envelope, message, _ = Spool.read_spooled(path)
        return envelope, message

    @staticmethod
    def read_spooled(path: Path) -> tuple[Envelope, RawMessage, float]:
        """`read`, and the file's modification time (when it was accepted) from the descriptor
        that read it. Through the descriptor alone, the usual file in one read: a Python file
        object cost five system calls more a message (an fstat, an ioctl, an lseek, the reads
        of its buffer), and the `accepted` event's look-up of the path a sixth. A file with the
        envelope attribute is the message whole (the message knows its file, which the object
        store can link); one without it starts with its envelope line."""
        fd = _open_to_read(path)
        try:
            status = os.fstat(fd)
            attribute = _envelope_attribute(fd)
            if attribute is not None:
                line, offset = attribute, 0
                start, ended = _read_up_to(fd, min(status.st_size, READ_WHOLE) + 1)
            else:
                line, offset, start, ended = _envelope_line(fd, path, status.st_size)
            while len(start) <= READ_WHOLE and not ended:
                more, ended = _read_up_to(fd, READ_WHOLE + 1 - len(start))
                start += more
        finally:
            os.close(fd)
        envelope = Envelope.model_validate_json(line)
        whole_file = str(path) if attribute is not None else None
        if len(start) <= READ_WHOLE:
            return envelope, RawMessage.of(start, file=whole_file), status.st_mtime
        return envelope, RawMessage.in_file(path, offset, file=whole_file), status.st_mtime

    @staticmethod
    def envelope_of(path: Path) -> Envelope | None:
        """The envelope of a spool file `read` found unreadable (empty, torn), when its
        attribute or its first line still holds one."""
        with path.open("rb") as spooled:
            line = _envelope_attribute(spooled.fileno())
            if line is None:
                line = spooled.readline(MAX_ENVELOPE_LINE).rstrip(b"\n")
        try:
            return Envelope.model_validate_json(line)
        except ValueError:
            return None

    def pending(self) -> list[Path]:
        """Spooled messages not yet finished, oldest first (ids sort by time)."""
        return sorted(self.directory.glob(f"*{_SUFFIX}"))

    def remove(self, path: Path, *, settled: bool = True) -> None:
        """A finished message's file goes: at once, or within `removed_after` at its end.
        `settled`: a replay of the file would find it finished (`pipeline._finished_before`,
        or its quarantine record); only such a file may be handed back (`handing_back`) to
        wait for the gateway's look. Another (a recipient waits in the deferred queue, whose
        record a second run would not see) goes at the block's end after the worker's own
        fsync, so no crash leaves it for a replay that runs those recipients again."""
        if self._to_remove is not None:
            self._to_remove.append(path)
            if not settled:
                self._unsettled.add(path)
        else:
            path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def removed_after(self, make_durable: Callable[[], None]) -> Iterator[list[Path]]:
        """The files `remove` is given within the block (those it yields) go at its end, after
        one `make_durable` (the state database's commits so far fsynced): each file's
        recipients' ends are durable before it goes, one fsync for a worker's call. A block
        within one adds to the outer one's. A failing `make_durable` (or a block that raises)
        leaves them all, to be replayed: each one's run finds its recipients' ends. Within
        `handing_back`, they are handed back instead, with no fsync here."""
        if self._to_remove is not None:
            yield self._to_remove
            return
        held: list[Path] = []
        self._to_remove = held
        try:
            yield held
        finally:
            self._to_remove = None
            unsettled, self._unsettled = self._unsettled, set()
        if not held:
            return
        if self._handed_back is not None:
            self._handed_back.extend(path for path in held if path not in unsettled)
            held = [path for path in held if path in unsettled]
        if held:
            remove_durably(held, make_durable)

    @contextlib.contextmanager
    def handing_back(self) -> Iterator[list[Path]]:
        """What `removed_after` would remove within the block is handed back (the list it
        yields) to whoever removes it later, after an fsync that starts after the block: the
        gateway's workers, whose files `mxgate run` removes with its checkpoint
        (`FinishedFiles`)."""
        handed: list[Path] = []
        self._handed_back = handed
        try:
            yield handed
        finally:
            self._handed_back = None

    def sync_directory(self, opened: int | None = None) -> None:
        """The names linked into the spool so far, durable (`opened`: the directory's
        descriptor, kept open by whoever syncs it often)."""
        if opened is not None:
            os.fsync(opened)
        else:
            fsync_directory(self.directory)


class SpoolWriter:
    """One message on its way into the spool: its envelope in the file's attribute (else its
    envelope line first), then its bytes as DATA brings them, in a file with no name yet
    (`O_TMPFILE`; where the file system has none, under a temporary name). A write that fails
    (a full disk, an unwritable spool) is kept for `commit` to raise, so the rest of DATA is
    still read and answered after its final dot; nothing is written after it."""

    def __init__(self, spool: Spool, envelope: Envelope) -> None:
        self.spool = spool
        self.envelope = envelope
        self.size = 0  # message bytes, the envelope line not counted
        self.error: OSError | None = None
        self._partial: str | None = None  # the temporary name, when the file has one
        self._names: list[Path] = []  # linked under (the spool's, the history's)
        # the file's descriptor, written through a buffer of our own: a Python file object
        # costs two system calls more a message (an fstat and an lseek when it is made)
        self._fd: int | None = None
        self._held: list[bytes] = []
        self._held_size = 0
        try:
            self._fd = self._open()
        except OSError as error:
            self._failed(error)
        else:
            self._keep_envelope(self._fd)

    def _open(self) -> int:
        """A file with no name in the spool directory: no directory entry to make now and to
        remove after the link (each one locks the directory against the commit thread's
        links), none left by a crash. Else one under a temporary name."""
        spool = self.spool
        if spool.unnamed:
            fd = open_unnamed(spool.path, 0o600)
            if fd is not None:
                return fd
            spool.unnamed = False  # this file system has none: named ones from now on
        self._partial = f"{spool.path}/{self.envelope.message_id}{_PARTIAL}"
        return os.open(self._partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def _keep_envelope(self, fd: int) -> None:
        """The envelope in the file's attribute, set now, so the fsync before `250` covers it:
        the file is then the message alone. Where the file system has no user attributes, or
        none this large (hundreds of recipients), its line goes first in the file instead."""
        envelope = self.envelope.model_dump_json().encode()
        if self.spool.attributes:
            try:
                os.setxattr(fd, ENVELOPE_ATTRIBUTE, envelope)
                return
            except OSError as error:  # the older format works wherever a file can be written
                if error.errno in _NO_ATTRIBUTES:
                    self.spool.attributes = False  # this file system has none: not tried again
        self._held.append(envelope + b"\n")
        self._held_size += len(envelope) + 1

    def _failed(self, error: OSError) -> None:
        self.error = self.error or error
        self.discard()

    def write(self, data: bytes, /) -> None:
        self.size += len(data)
        if self._fd is None:
            return
        self._held.append(data)
        self._held_size += len(data)
        if self._held_size >= WRITE_BUFFER:
            self.flush()

    def flush(self) -> None:
        """What the write buffer holds, to the file (not yet durable): a page-cache copy,
        quick enough for the event loop, so the thread `commit` runs in only waits on the
        disk."""
        if self._fd is None or not self._held:
            return
        held = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held, self._held_size = [], 0
        try:
            write_all(self._fd, held)
        except OSError as error:
            self._failed(error)

    def commit(self) -> Path:
        """Linked under its name, fsynced, the directory fsynced: the file the workers see is
        always whole and survives a crash. Only then is `250` due. (The ingress commits
        through `GroupCommit`, one directory fsync for several files.)"""
        path = self.link()
        try:
            self.spool.sync_directory()
        except BaseException:
            self.discard()  # the linked file stays: it is replayed, as after a crash
            raise
        self.tidy()
        return path

    def link(self) -> Path:
        """Linked under its name (and into the replay history), then fsynced: whole, but its
        name is durable only after the directory's fsync (`Spool.sync_directory`). The links
        come first: the file's fsync then writes its inode with its link count, where an
        fsync before them left a count of 0 on disk until a later writeback (a file made with
        no name has none; with no journal, as on ext4 without one, nothing else orders it), so
        a crash could leave a name pointing at an inode the file system deems free."""
        self.flush()
        if self.error is not None or self._fd is None:
            raise self.error or OSError("the spool file was discarded")
        fd = self._fd
        path = self.spool.directory / spooled_name(self.envelope.message_id)
        try:
            # a link, not a rename: it never replaces a spool file whose message has the same
            # id (FileExistsError), which would lose a message already answered 250
            self._link_to(fd, path)
        except BaseException:
            self.discard()
            raise
        if self.spool.keep is not None:  # now: a worker may take the spool file once answered
            self.spool.keep(partial(self._link_to, fd), self.envelope)
        try:
            os.fsync(fd)
        except OSError as error:  # answered 451: no name of it stays, the client sends it again
            self._unlink_names()
            self._failed(error)
            raise
        return path

    def _link_to(self, fd: int, target: Path) -> None:
        """Another name for the file: from its temporary name, or from its descriptor."""
        if self._partial is not None:
            os.link(self._partial, target)
        else:
            link_descriptor(fd, target)
        self._names.append(target)

    def _unlink_names(self) -> None:
        """The names `_link_to` gave the file (its fsync failed: it is not the message)."""
        names, self._names = self._names, []
        for name in names:
            with contextlib.suppress(OSError):  # a replay's worker may have taken it
                os.unlink(name)

    def tidy(self) -> None:
        """After the directory's fsync (the message may have had its 250): the file is closed
        and its temporary name, if any, goes. Neither is needed for the message's safety."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):  # fsynced: what close could say is said
            os.close(fd)
        if self._partial is not None:
            with contextlib.suppress(OSError):  # a leftover partial goes at the next start
                os.unlink(self._partial)

    def discard(self) -> None:
        """Nothing of this message stays (it was refused, or the client left)."""
        self._held, self._held_size = [], 0
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._partial is not None:
            with contextlib.suppress(OSError):  # never made (an unwritable spool)
                os.unlink(self._partial)


class GroupCommit:
    """Spool files made durable for an event loop by a thread or two: each takes every file
    waiting, links and fsyncs each one, then fsyncs the directory once for all of them, and
    wakes the loop once with every answer. A message's `250` still waits for its file's fsync
    and for a directory fsync begun after its link; what the messages committed together share
    is that directory fsync and the hand-offs (an executor's round trip a message cost the loop
    more than the fsyncs). A second thread starts when a file waits while the first is busy:
    one thread's fsyncs one after the other added a third to the ingress's time a message on a
    busy disk. A thread ends when it has had nothing to do for `IDLE_SECONDS`; the next commit
    starts another."""

    IDLE_SECONDS = 5.0
    THREADS = 2

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._waiting: queue.SimpleQueue[_Commit] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0  # running
        self._idle = 0  # of them, waiting for a commit

    def commit(self, writer: SpoolWriter) -> asyncio.Future[Path]:
        """The spool file's path once it is durable, or the OSError that kept it from being."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Path] = loop.create_future()
        self._waiting.put((writer, loop, done))
        with self._lock:  # after the put: a thread that finds nothing waiting has ended first
            if self._idle == 0 and self._threads < self.THREADS:
                self._threads += 1
                name = f"spool-commit {self.spool.directory}"
                threading.Thread(target=self._run, name=name, daemon=True).start()
        return done

    def _run(self) -> None:
        try:  # kept open while the thread runs: two system calls a batch fewer
            directory: int | None = os.open(self.spool.directory, os.O_RDONLY)
        except OSError:
            directory = None  # each batch tries again, and says why it fails
        ended = False
        try:
            while (batch := self._next_batch()) is not None:
                try:
                    answers = self._commit(batch, directory)
                except Exception as error:  # not the disk's: each message its 451 all the same
                    log.exception("spool commit failed")
                    answers = [(waiting, None, error) for waiting in batch]
                self._answer(answers)
                for (writer, _, _), path, _ in answers:
                    if path is not None:
                        self._tidy(writer)
                    else:  # a file linked but not known durable stays: it is replayed
                        writer.discard()
            ended = True
        finally:
            if directory is not None:
                os.close(directory)
            if not ended:  # the next commit starts another thread
                with self._lock:
                    self._threads -= 1

    @staticmethod
    def _tidy(writer: SpoolWriter) -> None:
        try:
            writer.tidy()
        except Exception:  # the message is durable and answered: this thread goes on
            log.exception("spool file not tidied", extra={"message_id": writer.envelope.message_id})

    def _next_batch(self) -> list[_Commit] | None:
        """What waits now (at least one), or None when nothing came for `IDLE_SECONDS`."""
        with self._lock:
            self._idle += 1
        while True:
            try:
                batch = [self._waiting.get(timeout=self.IDLE_SECONDS)]
                break
            except queue.Empty:
                with self._lock:
                    if self._waiting.empty():
                        self._threads -= 1
                        self._idle -= 1
                        return None
        with self._lock:
            self._idle -= 1
        with contextlib.suppress(queue.Empty):
            while True:
                batch.append(self._waiting.get_nowait())
        return batch

    def _commit(self, batch: list[_Commit], directory: int | None) -> list[_Answer]:
        answers: list[_Answer] = []
        linked: list[tuple[_Commit, Path]] = []
        for waiting in batch:
            try:
                linked.append((waiting, waiting[0].link()))
            except Exception as error:  # noqa: BLE001 -- the message's 451, not the thread's end
                answers.append((waiting, None, error))
        if linked:
            try:
                self.spool.sync_directory(directory)
            except OSError as error:  # linked but not durable: 451 each, the file is replayed
                return answers + [(waiting, None, error) for waiting, _ in linked]
        answers += [(waiting, path, None) for waiting, path in linked]
        return answers

    @staticmethod
    def _answer(answers: list[_Answer]) -> None:
        """One wake-up of each loop for all its answers (one loop, but for tests)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
        for answer in answers:
            by_loop.setdefault(answer[0][1], []).append(answer)
        for loop, theirs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: the file is replayed
                loop.call_soon_threadsafe(_settle, theirs)


def _open_to_read(path: Path) -> int:
    """Opened without updating its access time where the file is ours (O_NOATIME): with the
    mount's `relatime`, the first read of a file whose access time is not after its change
    dirties its inode again, fsynced just before for its `250` (1.5-2 us a read, and the
    inode's block written once more later)."""
    try:
        return os.open(path, os.O_RDONLY | _NOATIME)
    except PermissionError:  # not the file's owner (the flag's only refusal): as usual
        return os.open(path, os.O_RDONLY)


def _read_up_to(fd: int, size: int) -> tuple[bytes, bool]:
    """Up to `size` bytes, and whether the file ended (a regular file's read is short only
    at its end)."""
    data = os.read(fd, size)
    return data, len(data) < size


def _envelope_attribute(fd: int) -> bytes | None:
    """The envelope the file's attribute holds; None: the file has none (the older format)."""
    try:
        return os.getxattr(fd, ENVELOPE_ATTRIBUTE)
    except OSError as error:
        if error.errno in _NO_ATTRIBUTE:
            return None
        raise


def _envelope_line(fd: int, path: Path, size: int) -> tuple[bytes, int, bytes, bool]:
    """A file in the older format, read from its start: its envelope line, where the message
    starts, the message's bytes read with the line, and whether the file ended."""
    head, ended = _read_up_to(fd, min(size, _FIRST_READ) + 1)
    newline = head.find(b"\n")
    while newline < 0 and not ended and len(head) <= MAX_ENVELOPE_LINE:
        more, ended = _read_up_to(fd, _FIRST_READ)
        searched, head = len(head), head + more
        newline = head.find(b"\n", searched)
    if newline < 0 or newline >= MAX_ENVELOPE_LINE:
        raise ValueError(f"spool file {path.name} has no envelope line")
    return head[: newline + 1], newline + 1, head[newline + 1 :], ended


Linker = Callable[[Path], None]  # links a spool file to another name (the replay history's)
_Commit = tuple[SpoolWriter, "asyncio.AbstractEventLoop", "asyncio.Future[Path]"]
_Answer = tuple[_Commit, Path | None, Exception | None]


def _settle(answers: list[_Answer]) -> None:
    for (_, _, done), path, error in answers:
        if done.cancelled():
            continue
        if error is not None:
            done.set_exception(error)
        else:
            assert path is not None
            done.set_result(path)
