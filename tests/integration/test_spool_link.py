"""One inode a message: the spool file holds the message alone (its envelope in an extended
attribute), its replay history entry and the WriteToS3 and Archive objects are hard links of
it. Files in the older format (the envelope line first), or written where the attribute cannot
be set, are still read and replayed, and their objects written. Real files throughout."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from mxgate.adapters.local.objects import FileObjectStore
from mxgate.local import worker as worker_process
from mxgate.local.bootstrap import Worker
from mxgate.local.history import History
from mxgate.local.pipeline import Result, receive_spooled
from mxgate.local.spool import ENVELOPE_ATTRIBUTE, Spool
from mxgate.records import Envelope, Outcome
from tests.support import small_filesystem
from tests.worker_harness import RAW, accept, mailbox, mailbox_host_replies, outcomes, run_due

RAW_BUCKET = "mxgate-rawmailbucket"  # the template's RawMailBucket


def envelope_of(message_id: str, recipients: list[str]) -> Envelope:
    return Envelope(
        message_id=message_id,
        mail_from="bounce@shop.example",
        recipients=recipients,
        helo="mx.shop.example",
        source_ip="192.0.2.1",
    )


def attribute(path: Path) -> bytes | None:
    return (
        os.getxattr(path, ENVELOPE_ATTRIBUTE) if ENVELOPE_ATTRIBUTE in os.listxattr(path) else None
    )


def objects_of(worker: Worker, message_id: str) -> list[Path]:
    root = worker.setup.dirs.objects
    return sorted(p for p in root.rglob(f"{message_id}*") if p.is_file() and ".meta" not in p.parts)


def test_a_spool_file_is_the_message_alone_its_envelope_in_its_attribute(tmp_path):
    spool = Spool(tmp_path)
    envelope = envelope_of("01ATTRIBUTE", ["alice@nutrition.co"])
    path = spool.write(envelope, RAW)
    assert path.read_bytes() == RAW
    assert Envelope.model_validate_json(attribute(path) or b"") == envelope
    read, message = Spool.read(path)
    assert (read, message.read(), message.file) == (envelope, RAW, str(path))


def test_a_spool_file_in_the_older_format_reads_back_and_its_message_has_no_file(tmp_path):
    envelope = envelope_of("01OLDFORMAT", ["alice@nutrition.co"])
    path = tmp_path / "01OLDFORMAT.msg"
    path.write_bytes(envelope.model_dump_json().encode() + b"\n" + RAW)
    read, message = Spool.read(path)
    assert (read, message.read(), message.file) == (envelope, RAW, None)


def test_an_envelope_too_large_for_an_attribute_goes_first_in_the_file(tmp_path):
    """Hundreds of recipients: more than one attribute takes (ext4: a block), so the file is
    written as before, and read back the same."""
    spool = Spool(tmp_path)
    envelope = envelope_of("01HUGE", [f"r{n}@nutrition.co" for n in range(500)])
    path = spool.write(envelope, RAW)
    assert attribute(path) is None
    line, _, rest = path.read_bytes().partition(b"\n")
    assert (Envelope.model_validate_json(line), rest) == (envelope, RAW)
    read, message = Spool.read(path)
    assert (read, message.read(), message.file) == (envelope, RAW, None)
    assert spool.attributes  # the next, smaller envelope still goes into its attribute
    small = spool.write(envelope_of("01SMALLER", ["alice@nutrition.co"]), RAW)
    assert small.read_bytes() == RAW


@contextmanager
def without_attributes(mount_point: Path) -> Iterator[Path]:
    """A ramfs, which has no extended attributes at all (EOPNOTSUPP)."""
    mount_point.mkdir()
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    subprocess.run([*sudo, "mount", "-t", "ramfs", "ramfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run([*sudo, "umount", "--lazy", str(mount_point)], check=True)


def test_a_spool_on_a_file_system_without_attributes_writes_the_older_format(tmp_path):
    with without_attributes(tmp_path / "ramfs") as directory:
        spool = Spool(directory / "spool")
        envelope = envelope_of("01NOATTRIBUTES", ["alice@nutrition.co"])
        path = spool.write(envelope, RAW)
        assert not spool.attributes  # said once: not tried again for the next files
        line, _, rest = path.read_bytes().partition(b"\n")
        assert (Envelope.model_validate_json(line), rest) == (envelope, RAW)
        assert Spool.read(path)[0] == envelope


def test_an_older_spool_file_is_replayed_on_start_its_objects_written(worker):
    envelope = envelope_of("01OLDREPLAYED", ["alice@nutrition.co"])
    path = worker.spool.directory / "01OLDREPLAYED.msg"
    path.write_bytes(envelope.model_dump_json().encode() + b"\n" + RAW)
    replayed = [str(p) for p in worker.spool.pending()]  # what a start hands the workers
    assert worker_process.receive(replayed) == [Result.DONE]
    assert outcomes(worker, "01OLDREPLAYED") == {"alice@nutrition.co": Outcome.DELIVERED}
    stored = objects_of(worker, "01OLDREPLAYED")
    assert stored
    assert all(p.read_bytes() == RAW for p in stored)  # the message, not the envelope line


def test_the_objects_are_the_spool_file_and_outlive_it_and_the_history(worker):
    """The spool file, its history entry, the WriteToS3 and the Archive objects: one inode.
    Removing the spool file (the message done) and pruning the history leave the objects."""
    history = History(worker.setup.dirs.home / "history", keep_seconds=0)
    spool = Spool(worker.spool.directory, history.keep)
    envelope = envelope_of("01ONEINODE", ["alice@nutrition.co"])
    path = spool.write(envelope, RAW)
    (kept,) = history.messages()
    inode = path.stat().st_ino
    assert kept.stat().st_ino == inode
    assert receive_spooled(worker, path) is Result.DONE
    assert not path.exists()
    stored = objects_of(worker, "01ONEINODE")
    assert len(stored) == 2  # WriteToS3's and Archive's (the template's rules)
    assert [p.stat().st_ino for p in stored] == [inode, inode]
    assert history.prune(worker.clock.now() + timedelta(days=2)) == 1
    assert not kept.exists()
    assert [p.read_bytes() for p in stored] == [RAW, RAW]
    assert stored[0].stat().st_nlink == 2


def test_a_deferral_finds_its_linked_object_after_the_spool_file_and_history_are_gone(worker):
    """The deferred delivery reads the object named in its record: the spool file's inode,
    under a name fsynced before the spool file went (`make_written_durable`)."""
    mailbox_host_replies(worker, "workspace", "451 4.3.0 mailbox host busy")
    history = History(worker.setup.dirs.home / "history", keep_seconds=0)
    spool = Spool(worker.spool.directory, history.keep)
    path = spool.write(envelope_of("01DEFERLINK", ["alice@nutrition.co"]), RAW)
    inode = path.stat().st_ino
    assert receive_spooled(worker, path) is Result.DONE
    assert outcomes(worker, "01DEFERLINK") == {}  # waiting in the deferred queue
    assert inode in {p.stat().st_ino for p in objects_of(worker, "01DEFERLINK")}
    history.prune(worker.clock.now() + timedelta(days=2))
    mailbox_host_replies(worker, "workspace", None)
    assert run_due(worker) == ["done"]
    assert outcomes(worker, "01DEFERLINK") == {"alice@nutrition.co": Outcome.DELIVERED}
    assert mailbox(worker, "workspace", "alice@nutrition.co")[0].endswith(RAW)


def test_a_link_that_cannot_be_made_writes_the_bytes(workers, tmp_path):
    """The objects on another file system than the spool (EXDEV): the bytes are written."""
    home = tmp_path / "across"
    with small_filesystem(home / "objects", "4m"):
        worker = workers(home=home)
        path = accept(worker, "01ACROSS", ["alice@nutrition.co"])
        inode = path.stat().st_ino
        assert receive_spooled(worker, path) is Result.DONE
        stored = objects_of(worker, "01ACROSS")
        assert stored
        assert all(p.read_bytes() == RAW and p.stat().st_ino != inode for p in stored)
        assert outcomes(worker, "01ACROSS") == {"alice@nutrition.co": Outcome.DELIVERED}
        worker.close()  # before the file system goes


def test_linking_the_same_file_again_replaces_the_object_and_leaves_no_temporary(tmp_path):
    """A rule set retry links the spool file anew over the object it linked before."""
    spool = Spool(tmp_path / "spool")
    path = spool.write(envelope_of("01AGAIN", ["alice@nutrition.co"]), RAW)
    objects = FileObjectStore(tmp_path / "objects")
    assert objects.link_file(str(path), RAW_BUCKET, "raw/01AGAIN")
    assert objects.link_file(str(path), RAW_BUCKET, "raw/01AGAIN")
    folder = tmp_path / "objects" / RAW_BUCKET / "raw"
    assert [p.name for p in folder.iterdir()] == ["01AGAIN"]
    path.unlink()
    assert not objects.link_file(str(path), RAW_BUCKET, "raw/01GONE")  # the file gone
    assert objects.get(RAW_BUCKET, "raw/01AGAIN") == RAW
