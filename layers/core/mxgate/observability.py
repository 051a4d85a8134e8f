"""Structured logs, never a message body: on the terminal, key=value fields after the
message; in the error log, one JSON object a line (the same fields, and an exception's type,
message and traceback), for scripts and log shippers."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
ERROR_LOG = "errors.log"  # under $MXGATE_HOME/logs/: warnings, errors and their tracebacks
# A message's hops from the end of its DATA to its worker, at DEBUG, when asked for
# (MXGATE_LATENCY_LOG): what bench/latency_hops.py reads back beside the state database.
_latency = logging.getLogger("mxgate.latency")


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        line = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname} {record.name}: "
        line += record.getMessage() + (f" {fields}" if fields else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD}


class JsonLinesFormatter(logging.Formatter):
    """One record, one line of JSON: at, level, logger, message, its fields, and `error`
    ({type, message, traceback}) when it carries an exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
            **_fields(record),
        }
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            entry["error"] = {
                "type": type(error).__name__,
                "message": str(error),
                "traceback": self.formatException(record.exc_info),
            }
        return json.dumps(entry, ensure_ascii=False, default=str)


class ErrorLogHandler(logging.Handler):
    """Appends each record in one write (O_APPEND: the gateway's processes share the file, and
    no line is ever half another's). A record it cannot write (the disk is full) is dropped,
    and said once on the terminal, which shows every record anyway."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.WARNING)
        self.path = path
        self._fd: int | None = None
        self._failing = False
        self.setFormatter(JsonLinesFormatter())
        with contextlib.suppress(OSError):  # the file is there from the start, to tail -f
            self._open()

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def emit(self, record: logging.LogRecord) -> None:
        line = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
        try:
            os.write(self._open(), line)
        except OSError as error:
            if not self._failing:
                sys.stderr.write(f"mxgate: {self.path} not written for now ({error.strerror})\n")
            self._failing = True
            return
        self._failing = False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        super().close()


def configure_logging(
    level: str = "INFO", error_log: Path | None = None, *, latency: bool = False
) -> None:
    """Logs to stderr at `level`; with `error_log`, warnings and errors also go to that file
    as JSON lines (appended to: the gateway's processes share it), so a gateway in the
    background keeps them. With `latency`, each message's hops too (`hop`), whatever `level`."""
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(KeyValueFormatter())
    handlers: list[logging.Handler] = [console]
    if error_log is not None:
        error_log.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(ErrorLogHandler(error_log))
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    _latency.setLevel(logging.DEBUG if latency else logging.NOTSET)


def hop(stage: str, **where: str) -> None:
    """When a message (its message_id or spool_file) passed `stage`, to the microsecond on the
    wall clock the gateway's processes share; a level check when not asked for."""
    if _latency.isEnabledFor(logging.DEBUG):
        _latency.debug("hop", extra={"stage": stage, "at": f"{time.time():.6f}", **where})
