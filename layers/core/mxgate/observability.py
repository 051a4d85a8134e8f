"""Structured logs: key=value fields after the message, never a message body."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
ERROR_LOG = "errors.log"  # under $MXGATE_HOME/logs/: warnings, errors and their tracebacks


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{key}={value}" for key, value in record.__dict__.items() if key not in _STANDARD
        )
        line = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname} {record.name}: "
        line += record.getMessage() + (f" {fields}" if fields else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class AiosmtpdLoginDataNotice(logging.Filter):
    """aiosmtpd 1.4 itself sets the deprecated `Session.login_data` on every successful AUTH
    and warns about its own use; nothing of ours touches it, so the warning says nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Session.login_data is deprecated")


def configure_logging(level: str = "INFO", error_log: Path | None = None) -> None:
    """Logs to stderr at `level`; with `error_log`, warnings and errors also go to that file
    (appended to: the gateway's processes share it), so a gateway in the background keeps them."""
    formatter = KeyValueFormatter()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(formatter)
    handlers: list[logging.Handler] = [console]
    if error_log is not None:
        error_log.parent.mkdir(parents=True, exist_ok=True)
        errors = logging.FileHandler(error_log, encoding="utf-8")
        errors.setLevel(logging.WARNING)
        errors.setFormatter(formatter)
        handlers.append(errors)
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    for noisy in ("mail.log", "aiosmtpd", "asyncio"):  # aiosmtpd logs every command at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    mail_log = logging.getLogger("mail.log")  # aiosmtpd's logger
    if not any(isinstance(f, AiosmtpdLoginDataNotice) for f in mail_log.filters):
        mail_log.addFilter(AiosmtpdLoginDataNotice())
