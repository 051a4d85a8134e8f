"""Fixtures of the integration tests: local mailbox hosts on free ports, delivery benches,
worker processes' Workers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP

from mxgate.local.bootstrap import Worker
from mxgate.local.mailbox import MaildirHandler
from tests.delivery_harness import BenchFactory, bench_factory
from tests.worker_harness import worker_factory


@pytest.fixture
def mailbox_host(tmp_path: Path) -> Iterator[Callable[[str], int]]:
    """Start a mailbox host by name; returns its port. Mail lands in tmp_path/mailboxes/NAME/."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers: list[asyncio.Server] = []

    def start(name: str) -> int:
        handler = MaildirHandler(tmp_path / "mailboxes", name)

        async def listen() -> asyncio.Server:
            return await loop.create_server(
                lambda: SMTP(handler, hostname=f"{name}.test", enable_SMTPUTF8=True),
                "127.0.0.1",
                0,
            )

        server = asyncio.run_coroutine_threadsafe(listen(), loop).result(10)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start

    async def shutdown() -> None:
        for server in servers:
            server.close()
            await server.wait_closed()
        current = asyncio.current_task()
        sessions = [task for task in asyncio.all_tasks() if task is not current]
        for task in sessions:
            task.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.fixture
def benches(tmp_path: Path) -> Iterator[BenchFactory]:
    yield from bench_factory(tmp_path)


@pytest.fixture
def workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Worker]]:
    """Build a worker process's Worker (tests/worker_harness.py) from config overrides."""
    yield from worker_factory(tmp_path, monkeypatch)


@pytest.fixture
def worker(workers: Callable[..., Worker]) -> Worker:
    return workers()
