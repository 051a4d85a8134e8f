"""The gateway as a user runs it: `mxgate run` in a subprocess, real SMTP clients on loopback."""

from __future__ import annotations

import json
import shutil
import smtplib
import ssl
import subprocess
import sys
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from mxgate.local.spool import Spool
from mxgate.records import Envelope
from tests.dnsserver import Zone, ZoneServer
from tests.support import REPO, local_config, start_gateway, wait_for

pytestmark = pytest.mark.e2e

SENDER = "buyer@shop.example"


def client(port: int) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    smtp.starttls(context=context)
    return smtp


def message(to: str, subject: str, body: str = "Hello.\r\n") -> bytes:
    return (
        f"From: Buyer <{SENDER}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@shop.example>\r\n\r\n{body}"
    ).encode()


def only_file(directory: Path) -> Path:
    # not the hidden temporary file a write goes through before its rename (write_atomically)
    files = wait_for(
        lambda: (
            [f for f in directory.glob("*") if not f.name.startswith(".")]
            if directory.is_dir()
            else None
        )
    )
    assert len(files) == 1, files
    return files[0]


def test_ehlo_advertises_what_a_gateway_must(gateway_factory):
    gateway = gateway_factory()
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as smtp:
        code, _ = smtp.ehlo("client.example")
        assert code == 250
        for extension in ("starttls", "size", "8bitmime", "smtputf8", "pipelining"):
            assert smtp.has_extn(extension), extension
        assert int(smtp.esmtp_features["size"]) == 41943040
        # the template's ingress point has TlsPolicy REQUIRED
        code, reply = smtp.mail(SENDER)
        assert (code, reply[:5]) == (530, b"5.7.0")


def test_smtplib_delivery_lands_in_maildir_with_the_envelope(gateway_factory):
    gateway = gateway_factory()
    raw = message("Alice <alice@nutrition.co>, Carol <carol@nutrition.co>", "smtplib delivery")
    with client(gateway.smtp_port) as smtp:
        refused = smtp.sendmail(
            "bounces@shop.example", ["alice@nutrition.co", "carol@nutrition.co"], raw
        )
    assert refused == {}
    for host, recipient in (("workspace", "alice@nutrition.co"), ("m365", "carol@nutrition.co")):
        stored = only_file(gateway.mailbox(host, recipient)).read_bytes()
        parsed = message_from_bytes(stored, policy=policy.default)
        assert parsed["Return-Path"] == "<bounces@shop.example>"  # the envelope sender, preserved
        assert parsed["Delivered-To"] == recipient
        assert parsed["Subject"] == "smtplib delivery"
        # the loop token: the message id it names, signed with this gateway's key
        assert parsed["X-Mxgate-Loop"].split(".")[0] == parsed["Received"].split(" id ")[1][:26]
        assert "by mxgate.local (mxgate) with ESMTPS" in parsed["Received"]
        # the original message follows the prepended fields byte for byte
        assert stored.endswith(raw)


def test_app_mail_becomes_one_json_event_per_recipient(gateway_factory):
    gateway = gateway_factory()
    raw = message("orders@customer-support.nutrition.co", "order 77", "Two boxes, please.\r\n")
    with client(gateway.smtp_port) as smtp:
        smtp.sendmail(SENDER, ["orders@customer-support.nutrition.co"], raw)
    event_file = only_file(gateway.home / "events" / "orders")
    event = json.loads(event_file.read_text())
    assert event["app"] == "orders"
    assert event["recipient"] == "orders@customer-support.nutrition.co"
    assert event["envelope_sender"] == SENDER
    assert event["message"]["subject"] == "order 77"
    assert event["message"]["text"] == "Two boxes, please.\n"
    assert Path(event["raw"].removeprefix("file://")).read_bytes().endswith(raw)


def test_swaks_delivery(gateway_factory):
    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.fail("swaks is missing: `make test` installs it (Debian package swaks)")
    gateway = gateway_factory()
    result = subprocess.run(
        [
            swaks,
            "--server",
            f"127.0.0.1:{gateway.smtp_port}",
            "--tls",
            "--from",
            "sender@swaks.example",
            "--to",
            "bob@nutrition.co",
            "--header",
            "Subject: sent with swaks",
            "--body",
            "via swaks",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Ok: queued as" in result.stdout
    stored = only_file(gateway.mailbox("workspace", "bob@nutrition.co")).read_bytes()
    assert stored.startswith(
        b"Return-Path: <sender@swaks.example>\r\nDelivered-To: bob@nutrition.co\r\n"
    )
    assert b"Subject: sent with swaks" in stored


def test_outside_recipient_is_refused_and_nothing_is_stored(gateway_factory):
    gateway = gateway_factory()
    with client(gateway.smtp_port) as smtp:
        smtp.ehlo("client.example")
        assert smtp.mail(SENDER)[0] == 250
        code, reply = smtp.rcpt("someone@elsewhere.example")
        assert code == 550
        assert reply.startswith(b"5.7.1")
        with pytest.raises(smtplib.SMTPDataError) as refused:  # no recipient accepted: no DATA
            smtp.data(message("someone@elsewhere.example", "relay attempt"))
        assert refused.value.smtp_code == 503
    assert not list((gateway.home / "spool").glob("*"))
    objects = gateway.home / "objects"
    assert not objects.exists() or not [p for p in objects.rglob("*") if p.is_file()]
    traffic_log = (gateway.home / "logs" / "traffic-policy.jsonl").read_text().splitlines()
    record = json.loads(traffic_log[-1])
    assert record["verdict"] == "REJECT"
    assert record["decided_by"] == "DefaultAction (DENY)"


def test_oversized_message_is_refused_with_552(gateway_factory):
    gateway = gateway_factory(parameters={"MaxMessageSizeBytes": "2048"})
    with client(gateway.smtp_port) as smtp:
        smtp.ehlo("client.example")
        assert smtp.esmtp_features["size"] == "2048"
        code, reply = smtp.mail(SENDER, ["SIZE=5000"])
        assert (code, reply[:5]) == (552, b"5.3.4")
        smtp.rset()
        assert smtp.mail(SENDER)[0] == 250
        assert smtp.rcpt("alice@nutrition.co")[0] == 250
        code, reply = smtp.data(message("alice@nutrition.co", "too big", "x" * 70 + "\r\n") * 40)
        assert (code, reply[:5]) == (552, b"5.3.4")


def test_trace_shows_the_timeline(gateway_factory):
    gateway = gateway_factory()
    with client(gateway.smtp_port) as smtp:
        smtp.sendmail(SENDER, ["dave@nutrition.co"], message("dave@nutrition.co", "traced"))
    only_file(gateway.mailbox("m365", "dave@nutrition.co"))

    def trace(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mxgate", "trace", "--home", str(gateway.home), *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        )

    listing = json.loads(trace("--json").stdout)["messages"]
    assert len(listing) == 1
    message_id = listing[0]["message_id"]
    assert listing[0]["outcomes"] == {"delivered": 1}
    detail = json.loads(trace(message_id, "--json").stdout)
    stages = [e["stage"] for e in detail["events"]]
    for stage in ("accepted", "rules", "stored", "parsed", "classified", "terminal"):
        assert stage in stages
    assert stages.index("accepted") < stages.index("stored") < stages.index("parsed")
    assert detail["recipients"] == [
        {
            **detail["recipients"][0],
            "recipient": "dave@nutrition.co",
            "outcome": "delivered",
            "route": "m365",
        }
    ]
    human = trace(message_id[:10]).stdout
    assert "delivered" in human
    assert "dave@nutrition.co" in human


def test_ctrl_c_stops_cleanly(gateway_factory):
    gateway = gateway_factory()
    assert gateway.stop() == 0
    assert not (gateway.home / "run" / "ports.json").exists()


def test_spooled_message_is_replayed_on_start(tmp_path):
    """A message accepted (fsynced) before a crash is finished by the next start."""
    home = tmp_path / "home"
    raw = message("alice@nutrition.co", "accepted before the crash")
    Spool(home / "spool").write(
        Envelope(
            message_id="01CRASHED0000000000000000",
            mail_from=SENDER,
            recipients=["alice@nutrition.co"],
            helo="client.example",
            source_ip="127.0.0.1",
        ),
        raw,
    )
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    gateway = start_gateway(home, local_config(config_dir))
    try:
        stored = only_file(gateway.mailbox("workspace", "alice@nutrition.co")).read_bytes()
        assert stored.endswith(raw)
        wait_for(lambda: not list((home / "spool").glob("*.msg")))
    finally:
        gateway.stop()


def test_demo_samples_reach_their_expected_outcomes(tmp_path):
    config = local_config(tmp_path)  # DNS on loopback
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mxgate",
            "demo",
            "--home",
            str(tmp_path),
            "--config",
            str(config),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    outcomes = {row["outcome"] for row in report["rows"]}
    assert {"delivered", "handed_to_app", "quarantined", "bounced", "rejected"} <= outcomes


def test_delivered_mail_carries_our_authentication_results(gateway_factory):
    """SPF checked against a DNS server on loopback; a forged result claiming our authserv-id
    is removed, a foreign one kept, and every other byte is the original."""
    zone = Zone()
    zone.add("shop.example", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    dns = ZoneServer(zone)
    try:
        gateway = gateway_factory(
            dns={"nameservers": ["127.0.0.1"], "port": dns.port, "timeout": 2}
        )
        forged = b"Authentication-Results: mxgate.local; spf=pass; dkim=pass; dmarc=pass\r\n"
        foreign = b"Authentication-Results: mx.other.example; spf=none\r\n"
        raw = forged + foreign + message("alice@nutrition.co", "authenticated")
        with client(gateway.smtp_port) as smtp:
            smtp.sendmail(SENDER, ["alice@nutrition.co"], raw)
        stored = only_file(gateway.mailbox("workspace", "alice@nutrition.co")).read_bytes()
    finally:
        dns.stop()
    parsed = message_from_bytes(stored, policy=policy.default)
    results = [str(v) for v in parsed.get_all("Authentication-Results")]
    ours = [r for r in results if r.startswith("mxgate.local;")]
    assert len(ours) == 1
    assert "spf=pass" in ours[0]
    assert "smtp.mailfrom=buyer@shop.example" in ours[0]
    assert "dmarc=none" in ours[0]
    assert any(r.startswith("mx.other.example;") for r in results)
    assert stored.endswith(foreign + message("alice@nutrition.co", "authenticated"))
    assert forged not in stored


@pytest.mark.parametrize("asked", [True, False])
def test_a_messages_hops_are_logged_when_asked_for(tmp_path, asked):
    """MXGATE_LATENCY_LOG=1: the end of DATA, the durable spool file, its hand-out and its
    worker's start, in that order on the wall clock (what bench/latency_hops.py reads);
    without it, none."""
    env = {"MXGATE_LATENCY_LOG": "1"} if asked else {}
    (tmp_path / "config").mkdir()
    gateway = start_gateway(tmp_path / "home", local_config(tmp_path / "config"), env=env)
    try:
        with client(gateway.smtp_port) as smtp:
            smtp.ehlo("client.example")
            smtp.mail(SENDER)
            smtp.rcpt("alice@nutrition.co")
            code, reply = smtp.data(message("alice@nutrition.co", "hops"))
        assert code == 250
        message_id = reply.decode().rsplit(" ", 1)[1]
        only_file(gateway.mailbox("workspace", "alice@nutrition.co"))
    finally:
        assert gateway.stop() == 0
    output = (gateway.home / "gateway.out").read_text()
    hops = [line.split(" hop ", 1)[1] for line in output.splitlines() if "mxgate.latency" in line]
    if not asked:
        assert hops == []
        return
    found = {}
    for hop in hops:
        fields = dict(field.split("=", 1) for field in hop.split())
        if fields.get("message_id", fields.get("spool_file")) in (message_id, f"{message_id}.msg"):
            found[fields["stage"]] = float(fields["at"])
    stages = ["data_end", "durable", "handed_out", "taken"]
    assert sorted(found, key=found.__getitem__) == stages
