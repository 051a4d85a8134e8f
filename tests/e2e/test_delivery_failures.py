"""Delivery failures end to end: `mxgate run` in a subprocess, real SMTP on loopback, mailbox
hosts that play outages and refusals (their `.reply` files), SES behind a loopback endpoint
that throttles, and the `mxgate dlq` / `mxgate trace` commands as a user runs them. The
deferral schedule comes from the test's routes file (backoff in fractions of a second)."""

from __future__ import annotations

import json
import os
import smtplib
import ssl
import subprocess
import sys
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from mxgate.adapters.local.state import SqliteState
from mxgate.local.spool import Spool
from mxgate.records import Envelope
from tests.ses_endpoint import CREDENTIALS, ses_endpoint
from tests.support import (
    FAST_DEFERRALS,
    REPO,
    RunningGateway,
    local_config,
    ses_routes_document,
    start_gateway,
    wait_for,
)

pytestmark = pytest.mark.e2e

SENDER = "bounces@shop.example"


def routes_file(directory: Path, **delivery: Any) -> Path:
    document = ses_routes_document()  # the SES test needs the routing domains
    document["delivery"] = {**document["delivery"], **FAST_DEFERRALS, **delivery}
    document["directory"]["users"]["erin@nutrition.co"] = "workspace"  # a third on Workspace
    path = directory / "routes.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[Any]:
    started: list[RunningGateway] = []

    def start(
        home: Path | None = None,
        env: dict[str, str] | None = None,
        routes: dict[str, Any] | None = None,
        **config: Any,
    ) -> RunningGateway:
        directory = tmp_path / f"config{len(started)}"
        directory.mkdir()
        config["routes"] = str(routes_file(directory, **(routes or {})))
        gateway = start_gateway(
            home or tmp_path / f"home{len(started)}",
            local_config(directory, **config),
            env={"MXGATE_DEFER_POLL": "0.1", **(env or {})},
        )
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def send(port: int, recipients: list[str], raw: bytes, sender: str = SENDER) -> str:
    """Submit over SMTP with STARTTLS; returns the message id from `250 ... queued as ID`."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.ehlo("client.example")
        assert smtp.mail(sender)[0] == 250
        for recipient in recipients:
            assert smtp.rcpt(recipient)[0] == 250
        code, reply = smtp.data(raw)
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[-1]


def message(to: str, subject: str, body: str = "Hello.\r\n") -> bytes:
    return (
        f"From: Buyer <buyer@shop.example>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@shop.example>\r\n\r\n{body}"
    ).encode()


def mxgate(
    gateway: RunningGateway, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mxgate", *args, "--home", str(gateway.home)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=check,
        env={**os.environ, "MXGATE_DEFER_POLL": "0.1"},
    )


def trace(gateway: RunningGateway, message_id: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(mxgate(gateway, "trace", message_id, "--json").stdout)
    return result


def state(gateway: RunningGateway) -> SqliteState:
    """The gateway's own database, read directly to poll (the commands are for assertions)."""
    return SqliteState(gateway.home / "state.db")


def outcomes(gateway: RunningGateway, message_id: str) -> dict[str, str]:
    db = state(gateway)
    try:
        return {s.recipient: s.outcome.value for s in db.states(message_id)}
    finally:
        db.close()


def stages(gateway: RunningGateway, message_id: str) -> list[str]:
    db = state(gateway)
    try:
        return [e.stage.value for e in db.events(message_id)]
    finally:
        db.close()


def files(folder: Path) -> list[Path]:
    found = folder.glob("*") if folder.is_dir() else []
    return sorted(f for f in found if not f.name.startswith("."))  # no half-written temporary


def test_mailbox_host_down_then_up_loses_nothing(gateways):
    gateway = gateways()
    outage = gateway.home / "mailboxes" / "workspace" / ".reply"
    outage.write_text("421 4.3.2 Service not available, closing channel")
    raws = {
        recipient: message(recipient, f"during outage {n}")
        for n, recipient in enumerate(
            ["alice@nutrition.co", "bob@nutrition.co", "erin@nutrition.co"]
        )
    }
    sent = {recipient: send(gateway.smtp_port, [recipient], raw) for recipient, raw in raws.items()}
    carol = send(
        gateway.smtp_port, ["carol@nutrition.co"], message("carol@nutrition.co", "m365 is up")
    )

    for message_id in sent.values():  # retried by the state machine, then deferred, again and again
        wait_for(
            lambda m=message_id: (
                sum(e["stage"] == "deferred" for e in trace(gateway, m)["events"]) >= 2
            )
        )
    assert outcomes(gateway, carol) == {"carol@nutrition.co": "delivered"}
    waiting = trace(gateway, sent["alice@nutrition.co"])
    assert waiting["recipients"] == []  # nothing settled while the host is down
    assert [e for e in waiting["events"] if e["stage"] == "retry"]
    listing = mxgate(gateway, "trace").stdout
    assert "deferred (1 deliveries)" in listing

    outage.unlink()  # the host is back
    for recipient, message_id in sent.items():
        wait_for(lambda m=message_id, r=recipient: outcomes(gateway, m) == {r: "delivered"})
        (stored,) = files(gateway.mailbox("workspace", recipient))  # exactly once
        assert stored.read_bytes().endswith(raws[recipient])
    assert trace(gateway, sent["alice@nutrition.co"])["deferred"] == []


def test_a_5xx_is_dead_lettered_then_redriven_once_fixed(gateways):
    gateway = gateways()
    refusal = gateway.home / "mailboxes" / "workspace" / ".reply-bob@nutrition.co"
    refusal.write_text("550 5.1.1 <bob@nutrition.co>: Recipient address rejected: User unknown")
    message_id = send(
        gateway.smtp_port,
        ["alice@nutrition.co", "bob@nutrition.co"],
        message("alice@nutrition.co, bob@nutrition.co", "one refused"),
    )
    wait_for(lambda: len(outcomes(gateway, message_id)) == 2)
    assert outcomes(gateway, message_id) == {
        "alice@nutrition.co": "delivered",
        "bob@nutrition.co": "dead_lettered",
    }
    (record,) = json.loads(mxgate(gateway, "dlq", "list", "--json").stdout)["dead_letters"]
    assert record["recipients"] == ["bob@nutrition.co"]
    assert "User unknown" in record["reason"]
    human = mxgate(gateway, "dlq", "show", record["id"]).stdout
    assert "bob@nutrition.co" in human
    assert f"mxgate dlq redrive {record['id']}" in human

    refusal.unlink()  # the user now exists
    redriven = mxgate(gateway, "dlq", "redrive", record["id"])
    assert "redriven" in redriven.stdout
    wait_for(lambda: outcomes(gateway, message_id).get("bob@nutrition.co") == "delivered")
    assert len(files(gateway.mailbox("workspace", "bob@nutrition.co"))) == 1
    assert len(files(gateway.mailbox("workspace", "alice@nutrition.co"))) == 1  # not resent
    assert json.loads(mxgate(gateway, "dlq", "list", "--json").stdout)["dead_letters"] == []
    again = mxgate(gateway, "dlq", "redrive", record["id"], check=False)
    assert again.returncode == 1
    assert "no dead letter" in again.stdout
    stages = [e["stage"] for e in trace(gateway, message_id)["events"]]
    assert "redriven" in stages


def test_a_relay_outage_in_direct_mode_is_retried_by_the_running_gateway(gateways):
    """The rule set's own Relay (DirectMode) meets a 451: the spool file stays, the gateway's
    scheduler runs the rule set again on the deferral schedule, and once the host is back the
    message is relayed exactly once."""
    gateway = gateways(parameters={"SubmissionIngress": "true", "DirectMode": "true"})
    outage = gateway.home / "mailboxes" / "workspace" / ".reply"
    outage.write_text("451 4.3.0 try later")
    raw = message("alice@nutrition.co", "relay outage")
    message_id = send(gateway.smtp_port, ["alice@nutrition.co"], raw)
    wait_for(lambda: stages(gateway, message_id).count("deferred") >= 2)  # retried, still down
    assert outcomes(gateway, message_id) == {}
    spooled = gateway.home / "spool"
    assert sorted(spooled.glob("*.msg")) == [spooled / f"{message_id}.msg"]  # kept

    outage.unlink()
    wait_for(lambda: outcomes(gateway, message_id) == {"alice@nutrition.co": "delivered"})
    (stored,) = files(gateway.mailbox("workspace", "alice@nutrition.co"))
    assert stored.read_bytes().endswith(raw)
    wait_for(lambda: not list(spooled.glob("*.msg")))
    assert json.loads(mxgate(gateway, "dlq", "list", "--json").stdout)["dead_letters"] == []


def test_ses_throttling_is_retried_then_delivered_once(gateways):
    with ses_endpoint() as ses:
        ses.verify("nutrition.co")
        ses.throttle = 5  # more than the state machine's 3 retries: it defers, then delivers
        gateway = gateways(
            env=CREDENTIALS,
            destinations={"workspace": {"ses_endpoint": ses.url}, "m365": "m365"},
        )
        raw = message("alice@nutrition.co", "through ses")
        message_id = send(gateway.smtp_port, ["alice@nutrition.co"], raw)
        # SES took it (relayed): what the mailbox host did, SES reports later
        wait_for(lambda: outcomes(gateway, message_id) == {"alice@nutrition.co": "relayed"})
        (sent,) = ses.sent()
        assert (ses.throttled, ses.passed) == (5, 1)
    events = trace(gateway, message_id)["events"]
    assert sum(e["stage"] == "retry" for e in events) >= 3
    assert any(
        e["stage"] == "deferred" and "TooManyRequestsException" in e["detail"] for e in events
    )
    assert "alice@nutrition.co.test-google-a.com" in sent["destinations"]
    delivered = message_from_bytes(sent["raw_data"].encode(), policy=policy.default)
    assert delivered["From"] == '"Buyer via nutrition.co" <mxgate@nutrition.co>'  # SES needs it
    assert delivered["Reply-To"] == "Buyer <buyer@shop.example>"
    assert delivered["X-Mxgate-Loop"].startswith(f"{message_id}.")  # the loop token
    assert not files(gateway.mailbox("workspace", "alice@nutrition.co"))


def test_a_message_over_the_size_limit_becomes_a_claim_check(gateways):
    gateway = gateways(routes={"max_message_bytes": 3000})
    raw = message("alice@nutrition.co", "quarterly figures", "0123456789" * 7 + "\r\n") * 1
    raw += b"".join(
        b"figure %04d: 0123456789012345678901234567890123456789\r\n" % n for n in range(200)
    )
    message_id = send(gateway.smtp_port, ["alice@nutrition.co"], raw)
    wait_for(lambda: outcomes(gateway, message_id) == {"alice@nutrition.co": "delivered"})
    (stub_file,) = files(gateway.mailbox("workspace", "alice@nutrition.co"))
    stub = message_from_bytes(stub_file.read_bytes(), policy=policy.default)
    assert stub["Subject"] == "[too large to deliver] quarterly figures"
    assert len(stub_file.read_bytes()) < 3000
    original = Path(unquote(urlsplit(stub["X-Mxgate-Claim-Check"]).path))
    assert original.read_bytes().endswith(raw)  # the stored original, as received
    assert "claim check" in trace(gateway, message_id)["recipients"][0]["detail"]


def test_a_duplicate_event_is_delivered_once(gateways, tmp_path):
    home = tmp_path / "dup-home"
    gateway = gateways(home=home)
    raw = message("dave@nutrition.co", "only once")
    message_id = send(gateway.smtp_port, ["dave@nutrition.co"], raw)
    wait_for(lambda: outcomes(gateway, message_id) == {"dave@nutrition.co": "delivered"})
    gateway.stop()
    # the same message arrives again under the same id (an S3 event delivered twice, a replay)
    Spool(home / "spool").write(
        Envelope(message_id=message_id, mail_from=SENDER, recipients=["dave@nutrition.co"]), raw
    )
    again = gateways(home=home)
    wait_for(lambda: not list((home / "spool").glob("*.msg")))
    # found finished (dave has his end): neither stored nor delivered again
    assert stages(again, message_id).count("stored") == 1
    assert len(files(again.mailbox("m365", "dave@nutrition.co"))) == 1
    assert outcomes(again, message_id) == {"dave@nutrition.co": "delivered"}
