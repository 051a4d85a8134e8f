"""Post-ingress hooks on one machine: a command given the event on stdin, or a signed HTTP
POST. A hook with neither (only an AWS `function`) is skipped here, and says so."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from mxgate.delivery.hooks import HookRunner
from mxgate.errors import PermanentError, TransientError
from mxgate.ports import Webhooks
from mxgate.routing.routes import Hook

EX_TEMPFAIL = 75  # sysexits.h: a hook asks to be called again later


class LocalHooks(HookRunner):
    elsewhere = "an AWS function"

    def __init__(self, hooks: Mapping[str, Hook], poster: Webhooks, workdir: Path) -> None:
        super().__init__(hooks, poster)
        self.workdir = workdir  # commands run here (the routes file's directory)

    def run_here(self, hook: str, spec: Hook, event_id: str, body: bytes) -> str | None:
        if spec.command is None:
            return None
        try:
            done = subprocess.run(  # noqa: S603 -- the command comes from the routes file
                spec.command,
                input=body,
                capture_output=True,
                timeout=spec.timeout,
                cwd=self.workdir,
                env={**os.environ, "MXGATE_EVENT_ID": event_id, "MXGATE_HOOK": hook},
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise TransientError(f"hook {hook}: no answer in {spec.timeout:g}s") from error
        except OSError as error:
            raise PermanentError(f"hook {hook}: cannot run {spec.command[0]}: {error}") from error
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        last = said[-1] if said else ""  # the records keep what fits
        if done.returncode == 0:
            return f"hook {hook}: exit 0"
        detail = f"hook {hook}: exit {done.returncode} {last}".strip()
        if done.returncode == EX_TEMPFAIL:
            raise TransientError(detail)
        raise PermanentError(detail)
