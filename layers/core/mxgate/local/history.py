"""The history `mxgate rules replay` runs again: every accepted message as it was received
(a spool file: the bytes, its envelope in an attribute or, in older files, its first line),
kept under `$MXGATE_HOME/history/<day>/` for a while.

Each entry is a hard link to the spool file, made when the message is accepted: keeping it
costs no copy and no fsync, and it outlives the spool file's removal. The message's objects
may be names of the same file (`FileObjectStore.link_file`): a day's prune removes its names,
and the objects stay. Days older than the configured time are removed by the gateway's hourly
housekeeping (`local/server.py`), never on a message's way to its `250`: removing a day of
files is slow, and leaves new files slower to make for minutes on ext4 without a journal
(docs/benchmarks.md, "Files a message").
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mxgate.local.spool import Linker, Spool, spooled_name
from mxgate.records import Envelope
from mxgate.replay.decisions import StoredMessage

log = logging.getLogger("mxgate.history")

_DAY = "%Y-%m-%d"


def received(envelope: Envelope) -> datetime:
    """When the ingress accepted it (its envelope says; one written before that was recorded
    counts as now)."""
    return envelope.received_at or datetime.now(UTC)


class History:
    def __init__(self, directory: Path, keep_seconds: float) -> None:
        self.directory = directory
        self.keep_seconds = keep_seconds

    def keep(self, link: Linker, envelope: Envelope) -> None:
        """Link a freshly spooled message (`link`: what links its file) into its day, named as
        in the spool; never fails the message."""
        day = self.directory / received(envelope).astimezone(UTC).strftime(_DAY)
        name = spooled_name(envelope.message_id)
        try:
            try:  # the day's directory is there but for the first message of a day
                link(day / name)
            except FileNotFoundError:
                day.mkdir(parents=True, exist_ok=True)
                link(day / name)
        except OSError as error:  # another file system, no links: the message goes on
            log.warning(
                "message not kept for replay",
                extra={"message_id": envelope.message_id, "error": repr(error)},
            )

    def prune(self, now: datetime) -> int:
        """Remove the days that ended more than `keep_seconds` ago; how many were removed."""
        oldest = (now - timedelta(seconds=self.keep_seconds)).astimezone(UTC).date()
        removed = 0
        for day in self.directory.iterdir() if self.directory.is_dir() else ():
            try:
                date = datetime.strptime(day.name, _DAY).replace(tzinfo=UTC).date()
            except ValueError:
                continue
            if date < oldest:
                shutil.rmtree(day, ignore_errors=True)
                removed += 1
        return removed

    def messages(self, since: datetime | None = None, limit: int | None = None) -> list[Path]:
        """The kept messages received since `since` (the newest `limit`), oldest first."""
        if not self.directory.is_dir():
            return []
        first_day = since.astimezone(UTC).strftime(_DAY) if since is not None else ""
        found = sorted(
            path
            for day in self.directory.iterdir()
            if day.is_dir() and day.name >= first_day
            for path in day.glob("*.msg")
        )
        return found[-limit:] if limit else found

    @staticmethod
    def read(path: Path) -> StoredMessage:
        envelope, message = Spool.read(path)  # the replay reads it whole: small, off the path
        return StoredMessage(envelope=envelope, raw=message.read(), received_at=received(envelope))
