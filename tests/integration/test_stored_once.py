"""A message the rule set both archives and stores for the pipeline (the template's `archive`
and `store` rules) is written to the object store once: the second object is a hard link to
the first, and each is still deleted alone (archive retention, `mxgate quarantine delete`)."""

from __future__ import annotations

import os
from pathlib import Path

from mxgate.adapters.local.archive import SqliteArchive
from mxgate.archive.query import ArchivedMessage
from mxgate.local.bootstrap import Worker
from mxgate.local.pipeline import Result, receive_spooled
from tests.worker_harness import RAW, accept

RAW_BUCKET = "mxgate-rawmailbucket"  # the template's RawMailBucket


def stored(worker: Worker, message_id: str) -> tuple[SqliteArchive, ArchivedMessage]:
    """The message through the worker; the archive index and its entry."""
    path = accept(worker, message_id, ["alice@nutrition.co"])
    assert receive_spooled(worker, path) is Result.DONE
    archive = worker.mail_manager.actions.archive_index
    assert isinstance(archive, SqliteArchive)
    (entry,) = archive.find(message_id)
    archived = archive.get(entry)
    assert archived is not None
    return archive, archived


def test_archive_and_write_to_s3_write_the_bytes_once(worker):
    archive, archived = stored(worker, "01STOREDONCE0000000000000A")
    root = archive.objects.root
    one = os.stat(root / "mxgate-archive" / archived.key)
    other = os.stat(root / RAW_BUCKET / "raw" / "01STOREDONCE0000000000000A")
    assert (one.st_ino, one.st_nlink) == (other.st_ino, 2)  # one file, two names
    assert archive.raw(archived.archived_message_id) == RAW


def test_deleting_one_object_keeps_the_other(worker):
    """The stored object deleted (`mxgate quarantine delete`): the archived copy stays; the
    archived copy purged (retention): the stored object stays."""
    archive, first = stored(worker, "01STOREDONCE0000000000000B")
    archive.objects.delete(RAW_BUCKET, "raw/01STOREDONCE0000000000000B")
    assert archive.raw(first.archived_message_id) == RAW
    archive, second = stored(worker, "01STOREDONCE0000000000000C")
    archive.remove(second)
    assert archive.objects.get(RAW_BUCKET, "raw/01STOREDONCE0000000000000C") == RAW
    assert not Path(archive.objects.root / "mxgate-archive" / second.key).exists()
