"""Nothing stranded, end to end: `mxgate run` in a subprocess on free loopback ports.

- Its home on a small tmpfs filled to the last byte while mail comes in and deferred
  deliveries cycle: the ingress answers 4xx, the workers keep what they cannot finish, and
  once the space is freed and the gateway restarted, every message answered 250 ends once:
  one terminal state per recipient, one copy in each mailbox, nothing quarantined.
- One mailbox host's outage holds up no other host's mail, even with one worker: a delivery
  waits out its retries in the deferred queue, not in the worker.
- `kill -9` of the gateway takes its worker processes with it; after a replay, `mxgate trace`
  says done for messages whose recipients are all settled.
"""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
import yaml

from mxgate.adapters.local.state import SqliteState
from mxgate.records import TimelineEvent
from tests.support import (
    FAST_DEFERRALS,
    REPO,
    RunningGateway,
    SpooledFile,
    connect,
    fill,
    local_config,
    small_filesystem,
    start_gateway,
    wait_for,
)

pytestmark = pytest.mark.e2e

TEMPFAIL = "451 4.3.2 System not accepting network messages"


def config_in(directory: Path) -> Path:
    """The shipped configuration on free ports, with a fast deferral schedule."""
    directory.mkdir(parents=True, exist_ok=True)
    routes = yaml.safe_load((REPO / "config" / "routes.yaml").read_text())
    routes["delivery"] |= FAST_DEFERRALS
    (directory / "routes.yaml").write_text(yaml.safe_dump(routes))
    return local_config(directory, routes=str(directory / "routes.yaml"))


@pytest.fixture
def gateways() -> Iterator[list[RunningGateway]]:
    started: list[RunningGateway] = []
    yield started
    for gateway in started:
        gateway.stop()


def start(
    started: list[RunningGateway], home: Path, config: Path, output: Path | None = None, **env: str
) -> RunningGateway:
    (home / "run" / "ports.json").unlink(missing_ok=True)  # a killed gateway's is stale
    environment = {"MXGATE_DEFER_POLL": "0.1", **env}
    gateway = start_gateway(home, config, env=environment, output=output)
    started.append(gateway)
    return gateway


def message(recipients: list[str], subject: str) -> bytes:
    return (
        f"From: Buyer <buyer@shop.example>\r\nTo: {', '.join(recipients)}\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{subject.replace(' ', '.')}@shop.example>\r\n\r\n"
        "Hello.\r\n"
    ).encode()


def send(port: int, recipients: list[str], subject: str) -> str:
    with connect(port, tls=True) as smtp:
        reply = smtp.sendmail("buyer@shop.example", recipients, message(recipients, subject))
    assert reply == {}
    return "sent"


def accepted_id(reply: bytes) -> str:
    return reply.decode().rsplit(" ", 1)[-1]


def states(home: Path) -> dict[str, dict[str, str]]:
    """Every message's terminal states, by message id."""
    db = SqliteState(home / "state.db")
    try:
        rows = db.db.execute("SELECT message_id, recipient, outcome FROM recipient_states")
        found: dict[str, dict[str, str]] = {}
        for message_id, recipient, outcome in rows.fetchall():
            found.setdefault(message_id, {})[recipient.casefold()] = outcome
        return found
    finally:
        db.close()


def why_not_delivered(home: Path, settled: dict[str, dict[str, str]], outputs: Path) -> str:
    """For a failing run: each recipient not delivered with its recorded detail, and what the
    gateway said about its message."""
    db = SqliteState(home / "state.db")
    try:
        rows = db.db.execute(
            "SELECT message_id, recipient, outcome, route, detail FROM recipient_states"
        ).fetchall()
    finally:
        db.close()
    lines = [
        str(row)
        for row in rows
        if settled.get(row[0], {}).get(row[1].casefold(), "delivered") != "delivered"
    ]
    ids = {row[0] for row in rows if str(row) in lines}
    for out in sorted(outputs.glob("*.out")):
        lines += [
            f"{out.name}: {line}"
            for line in out.read_text().splitlines()
            if any(i in line for i in ids)
        ]
    errors = home / "logs" / "errors.log"
    if errors.exists():
        lines += ["errors.log, its end:", *errors.read_text().splitlines()[-150:]]
    return "\n".join(lines)


def events(home: Path, message_id: str) -> list[TimelineEvent]:
    db = SqliteState(home / "state.db")
    try:
        return list(db.events(message_id))
    finally:
        db.close()


def settled_at(home: Path, message_id: str) -> list[datetime]:
    """When each of the message's recipients reached its terminal state."""
    db = SqliteState(home / "state.db")
    try:
        rows = db.db.execute("SELECT at FROM recipient_states WHERE message_id=?", (message_id,))
        return [datetime.fromisoformat(at) for (at,) in rows.fetchall()]
    finally:
        db.close()


def stages(home: Path, message_id: str) -> list[str]:
    return [e.stage.value for e in events(home, message_id)]


def step_retries(home: Path, message_id: str) -> list[list[str]]:
    """The recipients of each of the message's step retries waiting in the deferred queue."""
    db = SqliteState(home / "state.db")
    try:
        return [
            w.record.recipients for w in db.deferred(message_id) if w.record.kind == "step-retry"
        ]
    finally:
        db.close()


def deferred_messages(home: Path) -> int:
    """How many messages have a delivery in the deferred queue."""
    db = SqliteState(home / "state.db")
    try:
        return len({w.record.message_id for w in db.deferred()})
    finally:
        db.close()


def unrecorded(output: str, message_id: str, recipient: str) -> bool:
    """Whether the gateway's output says it delivered to `recipient` without recording it."""
    return any(
        f"message_id={message_id} " in line
        and f"{recipient}: delivered to " in line
        and "its state was not recorded" in line
        for line in output.splitlines()
    )


def copies(home: Path) -> Counter[tuple[str, str]]:
    """(recipient, subject) of every Maildir file the mailbox hosts stored."""
    found: Counter[tuple[str, str]] = Counter()
    for path in (home / "mailboxes").glob("*/*/new/*"):
        parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
        found[(str(parsed["Delivered-To"]).casefold(), str(parsed["Subject"]))] += 1
    return found


def mxgate(home: Path, *args: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-m", "mxgate", *args, "--home", str(home), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


# ----------------------------------------------------------------------------- a full disk


@dataclass
class Load:
    """SMTP clients sending without pause: what was answered 250 (for which recipients), the
    4xx replies, and any other reply (none is expected: a full disk is temporary)."""

    port: int
    accepted: dict[str, tuple[list[str], str]] = field(default_factory=dict)  # id: (rcpts, subj)
    refused: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, number: int) -> None:
        sent = 0
        while not self.stop.is_set():
            recipients = [
                ["alice@nutrition.co"],
                ["carol@nutrition.co"],
                ["bob@nutrition.co", "dave@nutrition.co"],  # listed: others get 550 5.1.1
            ][sent % 3]
            subject = f"load {number}-{sent}"
            sent += 1
            try:
                self._one(recipients, subject)
            except smtplib.SMTPResponseException as error:
                self._refused(error.smtp_code, error.smtp_error)
            except (smtplib.SMTPException, OSError) as error:  # a dropped session: no reply
                self._refused(0, str(error).encode())

    def _one(self, recipients: list[str], subject: str) -> None:
        with connect(self.port, tls=True) as smtp:
            code, reply = smtp.mail("buyer@shop.example")
            if code != 250:
                self._refused(code, reply)
                return
            taken = []
            for recipient in recipients:
                code, reply = smtp.rcpt(recipient)
                if code == 250:
                    taken.append(recipient)
                else:
                    self._refused(code, reply)
            if not taken:
                return
            code, reply = smtp.data(message(taken, subject))
        if code != 250:
            self._refused(code, reply)
            return
        with self.lock:
            self.accepted[accepted_id(reply)] = (taken, subject)

    def _refused(self, code: int, reply: bytes) -> None:
        with self.lock:
            text = f"{code} {reply.decode(errors='replace')}"
            (self.refused if 400 <= code < 500 or code == 0 else self.unexpected).append(text)

    def count(self) -> tuple[int, int]:
        with self.lock:
            return len(self.accepted), len(self.refused)


def test_a_full_disk_under_load_ends_every_accepted_message_exactly_once(gateways, tmp_path):
    config = config_in(tmp_path / "config")
    with small_filesystem(tmp_path / "fs", "12m") as disk:
        home = disk / "home"
        output = tmp_path / "gateway.out"  # off the full disk: the terminal still works
        gateway = start(gateways, home, config, output, MXGATE_WORKERS="2")
        # every mailbox host says "later": deliveries cycle through retries and deferrals
        for host in ("workspace", "m365"):
            (home / "mailboxes" / host / ".reply").write_text(TEMPFAIL)
        load = Load(gateway.smtp_port)
        clients = [threading.Thread(target=load.client, args=(n,)) for n in range(3)]
        for client in clients:
            client.start()
        try:
            wait_for(lambda: load.count()[0] >= 24, timeout=60)
            wait_for(lambda: deferred_messages(home) >= 6, timeout=120)  # the workers are at it
            filler = fill(disk)
            before = load.count()[1]
            for host in ("workspace", "m365"):  # they answer again, where they can store
                (home / "mailboxes" / host / ".reply").unlink()
            wait_for(lambda: load.count()[1] >= before + 10, timeout=60)  # refused while full
        finally:
            load.stop.set()
            for client in clients:
                client.join(60)
        # not only the ingress: the workers and the deferred queue met the full disk too
        wait_for(lambda: "for now" in output.read_text(), 60)

        filler.unlink()
        gateway.stop()
        gateway = start(gateways, home, config, tmp_path / "restarted.out", MXGATE_WORKERS="2")

        def all_settled() -> bool:
            found = states(home)
            return all(
                set(found.get(message_id, {})) == {r.casefold() for r in recipients}
                for message_id, (recipients, _) in load.accepted.items()
            )

        wait_for(all_settled, timeout=180, interval=0.5)
        found = states(home)
        expected = {
            message_id: dict.fromkeys((r.casefold() for r in recipients), "delivered")
            for message_id, (recipients, _) in load.accepted.items()
        }
        settled = {m: found[m] for m in expected}
        assert settled == expected, why_not_delivered(
            home, settled, output.parent
        )  # none quarantined
        # one copy each; a second one only where the gateway said it delivered a copy whose
        # state it could not record (the state database full), so its retry sent it again
        stored = copies(home)
        said = "\n".join(o.read_text() for o in (output, tmp_path / "restarted.out"))
        for message_id, (recipients, subject) in load.accepted.items():
            for recipient in recipients:
                found = stored[(recipient.casefold(), subject)]
                if found != 1:
                    assert found == 2, (recipient, subject, found)
                    assert unrecorded(said, message_id, recipient), (message_id, recipient)
        assert mxgate(home, "quarantine", "list")["quarantined"] == []
        wait_for(lambda: not list((home / "spool").glob("*.msg")), timeout=30)
        assert mxgate(home, "dlq", "list")["dead_letters"] == []
        assert load.unexpected == []
        print(  # what the run went through, for the log
            f"{len(load.accepted)} accepted, {len(load.refused)} refused while full "
            f"({Counter(r[:9] for r in load.refused).most_common(3)})"
        )


# ----------------------------------------------------------------------------- one host down


def test_one_hosts_outage_holds_up_no_mail_for_another_even_with_one_worker(gateways, tmp_path):
    """alice's host answers 4xx: her delivery waits out the state machine's retries (real
    waits: 2 s, 4 s, 8 s with full jitter). Mail for carol's host, sent meanwhile to the one
    worker, is delivered before alice's retries are over, so it never queued behind them."""
    home = tmp_path / "home"
    gateway = start(
        gateways, home, config_in(tmp_path / "config"), MXGATE_WORKERS="1", MXGATE_RETRY_SCALE="1"
    )
    (home / "mailboxes" / "workspace" / ".reply").write_text(TEMPFAIL)
    with connect(gateway.smtp_port, tls=True) as smtp:
        smtp.mail("buyer@shop.example")
        smtp.rcpt("alice@nutrition.co")
        alice = accepted_id(smtp.data(message(["alice@nutrition.co"], "outage"))[1])
    # her retry's wait is a record in the deferred queue, not a sleeping worker (polled: a
    # wait of full jitter can be a few milliseconds)
    wait_for(
        lambda: step_retries(home, alice) == [["alice@nutrition.co"]], timeout=30, interval=0.005
    )

    with connect(gateway.smtp_port, tls=True) as smtp:
        smtp.mail("buyer@shop.example")
        smtp.rcpt("carol@nutrition.co")
        carol = accepted_id(smtp.data(message(["carol@nutrition.co"], "healthy"))[1])
    wait_for(lambda: states(home).get(carol) == {"carol@nutrition.co": "delivered"}, timeout=30)
    # carol was delivered before alice's retries were over. Compared by the events' times, not
    # by what is recorded when the test looks: full jitter can make her last waits short
    (carol_delivered,) = settled_at(home, carol)
    alice_deferred = [e.at for e in events(home, alice) if e.stage.value == "deferred"]
    assert all(carol_delivered < at for at in [*alice_deferred, *settled_at(home, alice)])

    (home / "mailboxes" / "workspace" / ".reply").unlink()
    wait_for(lambda: states(home).get(alice) == {"alice@nutrition.co": "delivered"}, timeout=60)
    assert copies(home)[("alice@nutrition.co", "outage")] == 1


# ----------------------------------------------------------------------------- kill -9


def children(pid: int) -> set[int]:
    """Live processes whose parent is `pid`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and alive(int(entry.name)):
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie has exited


def test_kill_9_takes_the_workers_along_and_a_replay_settles_everything(gateways, tmp_path):
    home = tmp_path / "home"
    config = config_in(tmp_path / "config")
    gateway = start(gateways, home, config, MXGATE_WORKERS="2")
    (home / "mailboxes" / "workspace" / ".reply").write_text(TEMPFAIL)
    with connect(gateway.smtp_port, tls=True) as smtp:
        sent = {}
        for recipient in ["alice@nutrition.co", "bob@nutrition.co", "carol@nutrition.co"]:
            smtp.mail("buyer@shop.example")
            smtp.rcpt(recipient)
            sent[recipient] = accepted_id(smtp.data(message([recipient], f"to {recipient}"))[1])
    wait_for(lambda: states(home).get(sent["carol@nutrition.co"]), timeout=30)
    wait_for(lambda: "deferred" in stages(home, sent["alice@nutrition.co"]), timeout=30)
    workers = children(gateway.process.pid)
    spawned = [p for p in workers if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
    assert spawned, workers

    gateway.process.kill()
    gateway.process.wait(10)
    wait_for(lambda: not any(alive(p) for p in workers), timeout=15)  # none left orphaned

    # carol's message as if the crash had come before its spool file was removed: replayed
    carol = sent["carol@nutrition.co"]
    kept = next((home / "history").rglob(f"{carol}.msg"))  # the spool file, as accepted
    SpooledFile.of(kept).restore(home / "spool" / f"{carol}.msg")
    (home / "mailboxes" / "workspace" / ".reply").unlink()
    start(gateways, home, config, MXGATE_WORKERS="2")

    wait_for(lambda: all(states(home).get(m) for m in sent.values()), timeout=60)
    wait_for(lambda: not list((home / "spool").glob("*.msg")), timeout=30)
    assert stages(home, carol).count("rules") == 1  # found finished: not run again
    listing = {row["message_id"]: row for row in mxgate(home, "trace")["messages"]}
    for recipient, message_id in sent.items():
        assert states(home)[message_id] == {recipient: "delivered"}
        assert listing[message_id]["in_progress"] is False
        assert copies(home)[(recipient, f"to {recipient}")] == 1


# ----------------------------------------------------------------------------- the history


def test_a_start_keeps_the_history_days_within_keep_and_removes_only_older_ones(gateways, tmp_path):
    """The shipped `history: {keep: 7d}`: a start removes a day of 30 days ago, off the
    messages' way, and keeps one of 2 days ago (a start once pruned as if keep were 0)."""
    home = tmp_path / "home"
    today = datetime.now(UTC).date()
    recent = home / "history" / (today - timedelta(days=2)).isoformat()
    old = home / "history" / (today - timedelta(days=30)).isoformat()
    for day in (recent, old):
        day.mkdir(parents=True)
        (day / "01KEPT.msg").write_bytes(b"")
    start(gateways, home, config_in(tmp_path / "config"))
    wait_for(lambda: not old.exists(), timeout=30)
    assert (recent / "01KEPT.msg").exists()
