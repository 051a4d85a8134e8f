"""Logs shaped like Mail Manager's vended logs, as JSON lines under $MXGATE_HOME/logs/.

ingress.jsonl: one record per accepted message; traffic-policy.jsonl: one per recipient with
each statement's evaluation; rule-set.jsonl: one per message per action. Each record is one
line, written in append mode by one write() (with the other records of its message), so
several processes can share a file; each file is kept open between writes and opened again
when it was removed or rotated (`LineAppender`). Like Mail Manager's, they are best effort: a record that
cannot be written (the disk is full) is dropped, said once in the gateway's log, and the mail
goes on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from mxgate.adapters.local.files import LineAppender

INGRESS = "ingress.jsonl"
TRAFFIC_POLICY = "traffic-policy.jsonl"
RULE_SET = "rule-set.jsonl"

log = logging.getLogger("mxgate.logs")
# one encoder for every record: json.dumps with options makes a new one each call (a fifth of
# a record's encoding)
_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode


class VendedLogs:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._failing: set[str] = set()  # files whose last write failed
        self._files = LineAppender()
        self._paths: dict[str, str] = {}  # file name: its path
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, record: Mapping[str, object]) -> None:
        self.write_all(name, [record])

    def write_all(self, name: str, records: Iterable[Mapping[str, object]]) -> None:
        """Several records, one line each, in one write()."""
        lines = "\n".join(_encode(r) for r in records)
        if not lines:
            return
        try:
            # bytes that were not UTF-8 (kept as surrogates) become JSON's \udcXX escapes
            self._files.append(self._path(name), lines.encode("utf-8", "backslashreplace"))
        except OSError as error:
            if name not in self._failing:
                log.warning(
                    "vended log records dropped for now",
                    extra={"file": name, "error": error.strerror or str(error)},
                )
            self._failing.add(name)
            return
        self._failing.discard(name)

    def _path(self, name: str) -> str:
        path = self._paths.get(name)
        if path is None:
            path = self._paths[name] = str(self.directory / name)
        return path
