"""The ingress's end of DATA when the session ends during the spool file's fsyncs: the file is
durable all the same, so it goes to the workers, not into the spool until the next start."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from mxgate.clock import SystemClock
from mxgate.local.addresslists import FileAddressBook
from mxgate.local.ingress import IngressHandler
from mxgate.local.logs import VendedLogs
from mxgate.local.spool import Spool, SpoolWriter
from mxgate.mailmanager.models import IngressPoint, TrafficPolicy
from mxgate.records import Envelope


class SlowCommit(SpoolWriter):
    """A real spool writer whose fsync and link wait for the test's word, as a slow disk would."""

    def __init__(self, spool: Spool, envelope: Envelope) -> None:
        super().__init__(spool, envelope)
        self.committing = threading.Event()
        self.go_on = threading.Event()

    def link(self) -> Path:
        self.committing.set()
        assert self.go_on.wait(10)
        return super().link()


def test_a_message_made_durable_after_its_client_left_goes_to_the_workers(tmp_path: Path):
    spool = Spool(tmp_path / "spool")
    submitted: list[Path] = []
    handler = IngressHandler(
        ingress_id="inp-test",
        ingress=IngressPoint(Type="OPEN", RuleSetId="rs", TrafficPolicyId="tp"),
        policy=TrafficPolicy(DefaultAction="ALLOW", PolicyStatements=[]),
        book=FileAddressBook(tmp_path / "address-lists"),
        spool=spool,
        logs=VendedLogs(tmp_path / "logs"),
        clock=SystemClock(),
        submit=submitted.append,
    )
    writer = SlowCommit(
        spool,
        Envelope(
            message_id="01LEFTEARLY000000000000000",
            mail_from="a@b.example",
            recipients=["c@d.example"],
        ),
    )
    writer.write(b"Subject: left early\r\n\r\nHello.\r\n")

    async def session_ends_during_the_fsyncs() -> None:
        ending = asyncio.create_task(handler.end_data(writer))
        while not writer.committing.is_set():
            await asyncio.sleep(0.01)
        ending.cancel()  # what aiosmtpd does to the session's task when the client goes away
        with pytest.raises(asyncio.CancelledError):
            await ending
        writer.go_on.set()
        for _ in range(500):
            if submitted:
                return
            await asyncio.sleep(0.01)

    asyncio.run(session_ends_during_the_fsyncs())
    assert len(submitted) == 1
    assert submitted[0].exists()
    assert submitted[0].parent == spool.directory
