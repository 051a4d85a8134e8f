"""The operator's commands against a running gateway (`mxgate run` in a subprocess, real SMTP
on loopback): archive search finds the sample messages, the executable attachment is in the
quarantine, and releasing it delivers it to its mailbox once."""

from __future__ import annotations

import json
import smtplib
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mxgate.adapters.local.state import SqliteState
from tests.support import REPO, SAMPLES, wait_for

pytestmark = pytest.mark.e2e


def send_sample(port: int, name: str) -> str:
    sample = json.loads((SAMPLES / f"{name}.expected.json").read_text())
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.ehlo("operator.test")
        smtp.mail(sample["mail_from"])
        for recipient in sample["recipients"]:
            smtp.rcpt(recipient)
        code, reply = smtp.data((SAMPLES / f"{name}.eml").read_bytes())
    assert code == 250
    return reply.decode().rsplit(" ", 1)[-1]


def mxgate(home: Path, config: Path, *args: str) -> Any:
    """The command as an operator types it, in its own process, JSON out."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mxgate",
            *args,
            "--home",
            str(home),
            "--config",
            str(config),
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def settled(home: Path, message_id: str, count: int) -> list[Any]:
    states = SqliteState(home / "state.db").states(message_id)
    return states if len(states) >= count else []


def test_archive_search_quarantine_and_release_once(gateway_factory):
    gateway = gateway_factory()
    config = gateway.home.parent / f"config{gateway.home.name.removeprefix('home')}" / "local.yaml"
    order = send_sample(gateway.smtp_port, "04-order")
    invoice = send_sample(gateway.smtp_port, "10-executable-attachment")
    wait_for(lambda: settled(gateway.home, order, 1))
    (held,) = wait_for(lambda: settled(gateway.home, invoice, 1))
    assert (held.outcome.value, held.route) == ("quarantined", "quarantine:executable-attachment")

    found = mxgate(gateway.home, config, "archive", "search", "--subject", "ORDER 2026")
    assert [m["message_id"] for m in found["messages"]] == ["order-2026-1187@bistro.example"]
    assert found["messages"][0]["has_attachments"] is True
    assert (
        mxgate(gateway.home, config, "archive", "search", "--subject", "nothing like it")["count"]
        == 0
    )

    listing = mxgate(gateway.home, config, "quarantine", "list")["quarantined"]
    assert [r["message_id"] for r in listing] == [invoice]
    assert listing[0]["recipients"][0]["rule"] == "executable-attachment"
    assert "invoice-4471.exe" in listing[0]["attachments"][0]

    mailbox = gateway.mailbox("workspace", "bob@nutrition.co")
    assert not mailbox.exists()
    released = mxgate(gateway.home, config, "quarantine", "release", invoice)
    assert released["released"] == ["bob@nutrition.co"]
    (delivered,) = wait_for(lambda: list(mailbox.glob("*")) if mailbox.is_dir() else None)
    assert b"invoice-4471.exe" in delivered.read_bytes()
    assert (
        b"Authentication-Results" in delivered.read_bytes()
        or b"Received:" in delivered.read_bytes()
    )
    state = wait_for(
        lambda: [s for s in settled(gateway.home, invoice, 1) if s.outcome.value == "delivered"]
    )
    assert state[0].route == "workspace"

    again = mxgate(gateway.home, config, "quarantine", "release", invoice)
    assert again["released"] == []  # the second release does nothing
    timeline = mxgate(gateway.home, config, "trace", invoice)
    released_events = [e for e in timeline["events"] if e["stage"] == "released"]
    assert len(released_events) == 1
    assert "by " in released_events[0]["detail"]
    tracked = mxgate(
        gateway.home,
        config,
        "trace",
        "--from",
        "BILLING@",
        "--since",
        "1h",
        "--outcome",
        "delivered",
    )["messages"]
    assert [(m["message_id"], m["subject"]) for m in tracked] == [(invoice, "Invoice 4471 overdue")]
    assert (
        mxgate(gateway.home, config, "trace", "--to", "orders@", "--outcome", "dead_lettered")[
            "messages"
        ]
        == []
    )
    gateway.stop()
    assert len(list(mailbox.glob("*"))) == 1  # once
