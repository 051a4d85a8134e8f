"""A delivery test bench: the real state machine definition run by the local interpreter, the
real step code, SQLite, files, and real SMTP mailbox hosts on loopback; only time is fake
(a clock whose sleep moves it forward), so retries and deferrals take no wall time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

from mxgate.adapters.local.appevents import FileAppEvents
from mxgate.adapters.local.objects import FileObjectStore
from mxgate.adapters.local.state import SqliteState
from mxgate.delivery.smtp import SmtpTarget, SmtpTransport
from mxgate.local.mailbox import MaildirHandler
from mxgate.local.settings import LocalSettings
from mxgate.local.setup import load_setup
from mxgate.local.workflow import LocalWorkflow
from mxgate.ports import Hooks, Transport, Webhooks
from mxgate.records import Deferred, DeferredDelivery, Envelope, StepRetry
from mxgate.routing.routes import Routes
from mxgate.workflow.dead_letter import redrive
from mxgate.workflow.services import Services
from tests.fakes import ManualClock
from tests.support import local_config, shipped_routes_document

BUCKET = "mxgate-raw"
SENDER = "bounces@shop.example"


class LoopThread:
    """An asyncio loop in a thread, serving SMTP servers on free loopback ports."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[asyncio.Server] = []

    def serve(self, factory: Callable[[], asyncio.Protocol]) -> int:
        future = asyncio.run_coroutine_threadsafe(
            self.loop.create_server(factory, "127.0.0.1", 0), self.loop
        )
        server = future.result(10)
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def close(self) -> None:
        async def shut() -> None:
            for server in self.servers:
                server.close()
                await server.wait_closed()

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def routes_with(**changes: Any) -> Routes:
    """config/routes.yaml with top-level keys replaced (`delivery` is merged)."""
    document = shipped_routes_document()
    if "delivery" in changes:
        changes["delivery"] = {**document.get("delivery", {}), **changes["delivery"]}
    document.update(changes)
    return Routes.model_validate(document)


@dataclass
class Bench:
    home: Path
    clock: ManualClock
    state: SqliteState
    objects: FileObjectStore
    services: Services
    workflow: LocalWorkflow
    hosts: dict[str, int]
    transports: dict[str, SmtpTransport] = field(default_factory=dict)
    counter: int = 0
    envelopes: dict[str, Envelope] = field(default_factory=dict)  # of the stored messages

    def mailbox_dir(self, host: str) -> Path:
        return self.home / "mailboxes" / host

    def received(self, host: str, recipient: str) -> list[bytes]:
        folder = self.mailbox_dir(host) / recipient.casefold() / "new"
        return [p.read_bytes() for p in sorted(folder.glob("*"))] if folder.is_dir() else []

    def host_answers(self, host: str, reply: str | None) -> None:
        """Make a mailbox host answer `reply` to every RCPT (None: accept again)."""
        path = self.mailbox_dir(host) / ".reply"
        if reply is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(reply)

    def store(
        self, raw: bytes, recipients: list[str], mail_from: str = SENDER, message_id: str = ""
    ) -> str:
        self.counter += 1
        message_id = message_id or f"01TEST{self.counter:020d}"
        key = f"raw/{message_id}"
        self.objects.put(BUCKET, key, raw)
        self.envelopes[message_id] = Envelope(
            message_id=message_id, mail_from=mail_from, recipients=recipients
        )
        return message_id

    def run(self, message_id: str) -> Any:
        """One execution for the stored message, its retries waited out (the clock jumps to
        each); what is deferred stays deferred. The output of the first run."""
        execution = self.workflow.start(BUCKET, f"raw/{message_id}", self.envelopes[message_id])
        self.wait_out_retries()
        return execution.output

    def deferred(self) -> list[DeferredDelivery]:
        waiting = [w.record for w in self.state.deferred()]
        return [r for r in waiting if isinstance(r, DeferredDelivery)]

    def step_retries(self) -> list[StepRetry]:
        return [w.record for w in self.state.deferred() if isinstance(w.record, StepRetry)]

    def wait_out_retries(self, limit: int = 100) -> None:
        """What the gateway's scheduler does for Tasks waiting out Retry intervals: jump to
        each next one and resume it, until none waits."""
        for _ in range(limit):
            waiting = self.step_retries()
            if not waiting:
                return
            self.clock.current = max(self.clock.current, min(w.due_at for w in waiting))
            self.run_due(kind=StepRetry)

    def run_due(self, kind: type[Deferred] = DeferredDelivery) -> int:
        """What the gateway's scheduler does: run every due record of one kind once (a
        deferred delivery's retries waited out after it)."""
        ran = 0
        for record in self.state.lease_due(self.clock.now(), 600):
            if not isinstance(record, kind):
                self.state.postpone(record.record_id, record.due_at)  # not this kind's turn
                continue
            if isinstance(record, StepRetry):
                self.workflow.resume(record)
            else:
                assert isinstance(record, DeferredDelivery)
                self.workflow.redeliver(record.delivery)
            self.state.finish_deferred(record.record_id)
            ran += 1
        if kind is DeferredDelivery:
            self.wait_out_retries()
        return ran

    def redrive(self, record_id: str) -> DeferredDelivery:
        """What `mxgate dlq redrive` does: the dead letter back in the deferred queue, due now."""
        return redrive(
            record_id,
            dead_letters=self.state,
            deferrals=self.state,
            timeline=self.state,
            clock=self.clock,
        )

    def run_until_settled(self, message_id: str, recipients: int, limit: int = 200) -> None:
        """Jump to each next due time and run it, until every recipient has a terminal state."""
        for _ in range(limit):
            if len(self.state.states(message_id)) >= recipients:
                return
            waiting = self.deferred()
            if not waiting:
                return
            due = min(w.due_at for w in waiting)
            self.clock.current = max(self.clock.current, due)
            self.run_due()

    def outcomes(self, message_id: str) -> dict[str, str]:
        return {s.recipient: s.outcome.value for s in self.state.states(message_id)}

    def stages(self, message_id: str) -> list[str]:
        return [e.stage.value for e in self.state.events(message_id)]


@dataclass
class BenchFactory:
    tmp_path: Path
    loop: LoopThread
    made: list[Bench] = field(default_factory=list)

    def __call__(
        self,
        routes: Routes | None = None,
        *,
        transports: dict[str, Transport] | None = None,
        hooks: Hooks | None = None,
        webhooks: Webhooks | None = None,
        bounces: bool = True,
    ) -> Bench:
        home = self.tmp_path / f"bench{len(self.made)}"
        (home / "config").mkdir(parents=True)
        setup = load_setup(
            LocalSettings(home=home, config=local_config(home / "config"), workers=1)
        )
        hosts = {}
        for host in ("workspace", "m365", "outside"):
            handler = MaildirHandler(home / "mailboxes", host)
            hosts[host] = self.loop.serve(
                partial(SMTP, handler, hostname=f"{host}.test", data_size_limit=None)
            )
        smtp = {
            name: SmtpTransport(SmtpTarget("127.0.0.1", port, timeout=10))
            for name, port in hosts.items()
        }
        clock = ManualClock(datetime(2025, 6, 2, 9, 0, tzinfo=UTC))
        state = SqliteState(home / "state.db")
        objects = FileObjectStore(home / "objects")
        services = Services(
            objects=objects,
            timeline=state,
            idempotency=state,
            transports=transports or {"workspace": smtp["workspace"], "m365": smtp["m365"]},
            app_events=FileAppEvents(home / "events"),
            dead_letters=state,
            routes=routes or setup.routes,
            clock=clock,
            gateway_host="mxgate.test",
            deferrals=state,
            bounces=smtp["outside"] if bounces else None,
            hooks=hooks,
            webhooks=webhooks,
        )
        bench = Bench(
            home=home,
            clock=clock,
            state=state,
            objects=objects,
            services=services,
            workflow=LocalWorkflow(setup.state_machine, services, retry_scale=1.0),
            hosts=hosts,
            transports=smtp,
        )
        self.made.append(bench)
        return bench

    def close(self) -> None:
        for bench in self.made:
            for transport in bench.transports.values():
                transport.close()
            bench.state.close()


def bench_factory(tmp_path: Path) -> Iterator[BenchFactory]:
    loop = LoopThread()
    factory = BenchFactory(tmp_path, loop)
    try:
        yield factory
    finally:
        factory.close()
        loop.close()


def message(
    to: str, subject: str, body: str = "Hello.\r\n", sender: str = "buyer@shop.example"
) -> bytes:
    return (
        f"From: Buyer <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@shop.example>\r\n\r\n{body}"
    ).encode()
