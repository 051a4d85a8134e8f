"""The run file: which gateway is running from a directory, so that `mxgate trace`, `dlq`,
`address-list` and the rest find its home without `--home`.

`mxgate run` writes `.mxgate-run.json` into the directory it was started from (the project)
and removes it when it stops. A file whose process is gone is stale and ignored.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

RUN_FILE = ".mxgate-run.json"


class RunFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    pid: int
    home: Path  # absolute
    config: Path  # absolute
    started_at: datetime


def run_file_path(directory: Path) -> Path:
    return directory / RUN_FILE


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def running_gateway(directory: Path) -> RunFile | None:
    """The gateway running from `directory`, if its run file names a live process."""
    try:
        record = RunFile.model_validate_json(run_file_path(directory).read_bytes())
    except (OSError, ValidationError):
        return None
    return record if _alive(record.pid) else None


def claim_run_file(directory: Path, record: RunFile) -> RunFile | None:
    """Write the run file for `record`, unless another live gateway holds it: then that one
    (which keeps the file: commands go on finding the gateway started first)."""
    holder = running_gateway(directory)
    if holder is not None and holder.pid != record.pid:
        return holder
    path = run_file_path(directory)
    temporary = path.with_name(f"{path.name}.{record.pid}.tmp")
    temporary.write_text(record.model_dump_json(indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)  # a reader sees the old file or the new one, never half of one
    return None


def release_run_file(directory: Path, pid: int) -> None:
    """Remove the run file if it is this process's."""
    path = run_file_path(directory)
    with contextlib.suppress(OSError, ValidationError):
        if RunFile.model_validate_json(path.read_bytes()).pid == pid:
            path.unlink()
