"""What the ingress does when things go wrong around it: a bad HELO, a locked database, a
worker process that dies, a crash that left a half-written spool file."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mxgate.adapters.local.state import SqliteState
from mxgate.records import Outcome, Stage
from tests.e2e.test_gateway import SENDER, client, message, only_file
from tests.support import local_config, start_gateway, wait_for

pytestmark = pytest.mark.e2e


def exchange(port: int, lines: list[bytes]) -> list[bytes]:
    """Send raw command lines one by one; the reply to each (the greeting first)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        stream = connection.makefile("rb")
        replies = [stream.readline()]
        for line in lines:
            connection.sendall(line)
            reply = stream.readline()
            while reply[3:4] == b"-":  # multi-line reply
                reply = stream.readline()
            replies.append(reply)
        return replies


def test_a_helo_with_control_characters_is_refused(gateway_factory):
    gateway = gateway_factory()
    replies = exchange(
        gateway.smtp_port,
        [
            b"EHLO evil.example\rX-Injected: yes\r\n",
            b"EHLO bad\x00name\r\n",
            b"EHLO good.example\r\n",
        ],
    )
    assert replies[1].startswith(b"501 5.5.4")
    assert replies[2].startswith(b"501 5.5.4")
    assert replies[3].startswith(b"250 ")


def test_a_locked_database_neither_stalls_sessions_nor_refuses_stored_mail(gateway_factory):
    gateway = gateway_factory()
    holder = sqlite3.connect(gateway.home / "state.db", timeout=1, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock until the 250 came
    try:
        before = datetime.now(UTC)
        with client(gateway.smtp_port) as smtp:
            smtp.ehlo()
            smtp.mail(SENDER)
            smtp.rcpt("alice@nutrition.co")
            code, reply = smtp.data(message("alice@nutrition.co", "locked"))
        answered = datetime.now(UTC)
        # 250 while the database is still locked: the ingress never waited on it
        assert code == 250, reply
        message_id = reply.decode().rsplit(" ", 1)[-1]
        assert (gateway.home / "spool" / f"{message_id}.msg").exists()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    stored = only_file(gateway.mailbox("workspace", "alice@nutrition.co")).read_bytes()
    assert b"Subject: locked" in stored
    # nothing skipped: the worker wrote the message's one `accepted` event, dated at the 250
    state = SqliteState(gateway.home / "state.db")
    states = wait_for(lambda: state.states(message_id) or None)
    assert [s.outcome for s in states] == [Outcome.DELIVERED]
    accepted = [e for e in state.events(message_id) if e.stage is Stage.ACCEPTED]
    assert len(accepted) == 1
    assert before <= accepted[0].at <= answered
    state.close()


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in found.stdout.split()]


def test_a_killed_worker_is_replaced_and_nothing_accepted_is_lost(gateway_factory):
    gateway = gateway_factory()
    with client(gateway.smtp_port) as smtp:  # the workers start on first use
        smtp.sendmail(SENDER, ["alice@nutrition.co"], message("alice@nutrition.co", "first"))
    only_file(gateway.mailbox("workspace", "alice@nutrition.co"))
    workers = [
        p
        for p in children(gateway.process.pid)
        if b"multiprocessing" in Path(f"/proc/{p}/cmdline").read_bytes()
    ]
    assert workers
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    for n in range(3):
        with client(gateway.smtp_port) as smtp:
            refused = smtp.sendmail(
                SENDER, ["carol@nutrition.co"], message("carol@nutrition.co", f"after {n}")
            )
        assert refused == {}
    mailbox = gateway.mailbox("m365", "carol@nutrition.co")
    wait_for(lambda: mailbox.is_dir() and len(list(mailbox.iterdir())) == 3, timeout=60)


def test_a_half_written_spool_file_is_discarded_and_whole_ones_replayed(tmp_path):
    home = tmp_path / "home"
    (home / "spool").mkdir(parents=True)
    (home / "spool" / "01TORN0000000000000000000.partial").write_bytes(b'{"message_id": "01TO')
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    gateway = start_gateway(home, local_config(config_dir))
    try:
        assert not list((home / "spool").glob("*.partial"))  # never answered 250: not mail
    finally:
        gateway.stop()
