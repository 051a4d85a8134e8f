"""What runs in each worker process of the gateway's pool.

The pool initializer builds one Worker per process from the composition root (the
process-wide instance below is the pool's documented pattern); `receive_handing_back` is what
the ingress submits, a batch of spool files a call, and `run_due_handing_back` what the deferred
queue's scheduler submits, one record a call; both hand the finished spool files back to the
gateway, which removes them. The work itself is `local/pipeline.py`.
"""

from __future__ import annotations

import atexit
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Collection
from pathlib import Path

from mxgate.local import pipeline
from mxgate.local.bootstrap import Bootstrap, Worker
from mxgate.local.settings import LocalSettings
from mxgate.observability import configure_logging
from mxgate.records import DEFERRED

_worker: Worker | None = None
EXIT_ORPHANED = 70  # the gateway is gone (EX_SOFTWARE)


def initialize(settings_json: str, mailbox_ports_json: str) -> None:
    global _worker  # noqa: PLW0603 -- one Worker per pool process, built once
    signal.signal(
        signal.SIGINT, signal.SIG_IGN
    )  # Ctrl-C reaches the whole group: the parent decides
    die_with_the_gateway()
    settings = LocalSettings.model_validate_json(settings_json)
    configure_logging(settings.log_level, settings.paths.error_log, latency=settings.latency_log)
    _worker = Bootstrap(settings).worker(json.loads(mailbox_ports_json))
    atexit.register(_worker.close)


def die_with_the_gateway() -> None:
    """End this process the moment the gateway that started it is gone (`kill -9` included),
    whatever it is doing: left alone, it would wait forever on the pool's pipe. Its work is
    safe to cut short: the spool file or the deferred record stays, and the next start runs
    it again (deliveries are idempotent)."""
    parent = multiprocessing.parent_process()
    if parent is None:  # not started by a pool (a test calling in directly)
        return
    sentinel = parent.sentinel  # readable once the parent has exited

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="gateway-watch", daemon=True).start()


def _current() -> Worker:
    assert _worker is not None, "initialize() runs first in every worker"
    return _worker


def receive(spool_files: list[str], fresh: Collection[str] = ()) -> list[pipeline.Result]:
    """A batch of spool files, one after another, each to its own end: one that fails (it is
    kept, or quarantined) leaves the others as they went. `fresh`: those of them the ingress
    just spooled, which no worker was given before. The finished files go at its end, after an
    fsync of its own (`receive_handing_back` is the gateway's)."""
    return pipeline.receive_batch(
        _current(), [Path(spool_file) for spool_file in spool_files], fresh={Path(f) for f in fresh}
    )


def run_due(record_json: str) -> pipeline.Result:
    return pipeline.run_due(_current(), DEFERRED.validate_json(record_json))


def receive_handing_back(
    spool_files: list[str], fresh: Collection[str] = ()
) -> tuple[list[pipeline.Result], list[str]]:
    """`receive` for `mxgate run`: the finished spool files are handed back with the results,
    not removed, and the gateway removes them after its next fsync of the state database
    (`spool.FinishedFiles`): the worker waits on no fsync of its own."""
    with _current().spool.handing_back() as finished:
        results = receive(spool_files, fresh)
    return results, [str(path) for path in finished]


def run_due_handing_back(record_json: str) -> tuple[pipeline.Result, list[str]]:
    """`run_due` for `mxgate run`, handing back what it finished (a rule set retry's file)."""
    with _current().spool.handing_back() as finished:
        result = run_due(record_json)
    return result, [str(path) for path in finished]
