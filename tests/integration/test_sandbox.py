"""Issue 8 through `mxgate sandbox`: the template's stack in moto, its ingress points and rule
sets on loopback, the real handlers, delivery through the relay ingress point to the mailbox
hosts. One sandbox for the module (starting one costs ~12 s: moto's Step Functions
interpreter and botocore's models load once)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import boto3
import dkim
import pytest

from mxgate.message.headers import header_fields
from mxgate.sandbox.report import RecipientReport, SendReport
from mxgate.sandbox.runtime import DELIVER_EGRESS, RELAY_EGRESS, Sandbox, SandboxOptions
from mxgate.sandbox.stack import REGION
from tests.dnsserver import Zone, ZoneServer
from tests.mailtools import Keys, make_keys
from tests.support import local_config

SENDER_IP = "192.0.2.25"
LIST_IP = "198.51.100.7"


@pytest.fixture(scope="module")
def keys() -> Keys:
    return make_keys()


@pytest.fixture(scope="module")
def dns(keys: Keys) -> Iterator[ZoneServer]:
    zone = Zone()
    zone.add("shop.example", "TXT", f"v=spf1 ip4:{SENDER_IP} -all")
    zone.add("_dmarc.shop.example", "TXT", "v=DMARC1; p=reject")
    zone.add("sel._domainkey.shop.example", "TXT", f"v=DKIM1; p={keys.public}")
    zone.add("lists.example.org", "TXT", f"v=spf1 ip4:{LIST_IP} -all")
    server = ZoneServer(zone)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, dns: ZoneServer) -> Iterator[Sandbox]:
    directory = tmp_path_factory.mktemp("sandbox")
    config = local_config(
        directory, dns={"nameservers": ["127.0.0.1"], "port": dns.port, "timeout": 2}
    )
    with Sandbox(SandboxOptions(home=directory / "home", config=config)) as started:
        yield started


def by_recipient(report: SendReport) -> dict[str, RecipientReport]:
    return {r.recipient: r for r in report.recipients}


def signed_order(keys: Keys) -> bytes:
    raw = (
        b"From: Shop <orders@shop.example>\r\n"
        b"To: Alice <alice@nutrition.co>, Carol <carol@nutrition.co>\r\n"
        b"Subject: Your order 2026-1187\r\n"
        b"Message-ID: <order-1187@shop.example>\r\n"
        b"Date: Mon, 30 Nov 2026 08:00:00 +0000\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Thank you for your order.\r\n"
    )
    signature = dkim.sign(
        raw, b"sel", b"shop.example", keys.private, include_headers=[b"from", b"to", b"subject"]
    )
    return signature + raw


def field(raw: bytes, name: bytes) -> bytes:
    """A header field exactly as it is in the bytes (name, value, folding and line break)."""
    return next(raw[s:e] for n, s, e in header_fields(raw) if n.lower() == name.lower())


def dkim_verifies(stored: bytes, dns: ZoneServer) -> bool:
    resolver = dns.resolver()

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return resolver.query(name.decode().rstrip("."), "TXT").records[0].encode()

    return bool(dkim.verify(stored, dnsfunc=lookup))


def test_a_bcc_recipient_is_delivered(sandbox: Sandbox) -> None:
    raw = b"From: a@shop.example\r\nTo: alice@nutrition.co\r\nSubject: hi\r\n\r\nbody\r\n"
    report = sandbox.send(
        raw, mail_from="a@shop.example", recipients=["alice@nutrition.co", "bob@nutrition.co"]
    )
    bob = by_recipient(report)["bob@nutrition.co"]  # in no header field: a Bcc
    assert (bob.outcome, bob.route) == ("delivered", "workspace")
    assert bob.mailbox_host == "workspace"
    assert bob.rcpt_to is not None
    assert "bob@nutrition.co" in bob.rcpt_to
    assert bob.path is not None
    assert Path(bob.path).read_bytes().endswith(raw)
    assert by_recipient(report)["alice@nutrition.co"].outcome == "delivered"


def test_list_mail_is_delivered_to_the_envelope_recipient(sandbox: Sandbox) -> None:
    raw = (
        b"From: Someone <someone@elsewhere.example>\r\nTo: list@lists.example.org\r\n"
        b"List-Id: <list.lists.example.org>\r\nSubject: [list] news\r\n\r\nnews\r\n"
    )
    report = sandbox.send(
        raw,
        mail_from="list-bounces+carol=nutrition.co@lists.example.org",
        recipients=["carol@nutrition.co"],
        ip=LIST_IP,
        helo="mail.lists.example.org",
    )
    (carol,) = report.recipients
    assert (carol.outcome, carol.route, carol.mailbox_host) == ("delivered", "m365", "m365")
    assert carol.mail_from == "list-bounces+carol=nutrition.co@lists.example.org"
    assert carol.provider is not None
    assert carol.provider.spf == "pass"  # judged on the list server's own address


def test_workspace_and_365_keep_mail_from_from_and_dkim_byte_for_byte(
    sandbox: Sandbox, keys: Keys, dns: ZoneServer
) -> None:
    raw = signed_order(keys)
    report = sandbox.send(
        raw,
        mail_from="bounce-7781@shop.example",
        recipients=["alice@nutrition.co", "carol@nutrition.co"],
        ip=SENDER_IP,
        helo="mail.shop.example",
    )
    delivered = by_recipient(report)
    assert {r: d.mailbox_host for r, d in delivered.items()} == {
        "alice@nutrition.co": "workspace",
        "carol@nutrition.co": "m365",
    }
    for entry in delivered.values():
        assert entry.outcome == "delivered"
        assert entry.mail_from == "bounce-7781@shop.example"  # MAIL FROM as the sender gave it
        assert entry.path is not None
        stored = Path(entry.path).read_bytes()
        assert stored.endswith(raw)  # every byte as received, trace fields in front
        assert field(stored, b"From") == field(raw, b"From")
        assert field(stored, b"DKIM-Signature") == field(raw, b"DKIM-Signature")
        assert dkim_verifies(stored, dns)  # at the mailbox host, over what it stored
        assert entry.provider is not None
        assert entry.provider.dkim == ["pass d=shop.example"]
        assert (entry.provider.spf, entry.provider.dmarc) == ("pass", "pass")


def test_the_hops_a_provider_sees_and_the_addresses_it_must_skip(sandbox: Sandbox) -> None:
    raw = b"From: a@shop.example\r\nTo: alice@nutrition.co\r\nSubject: hops\r\n\r\nx\r\n"
    report = sandbox.send(
        raw,
        mail_from="a@shop.example",
        recipients=["alice@nutrition.co"],
        ip=SENDER_IP,
        helo="mail.shop.example",
    )
    (alice,) = report.recipients
    assert alice.received is not None
    assert [(h.from_ip, h.by.split(".")[0]) for h in alice.received] == [
        (RELAY_EGRESS, "workspace"),  # Mail Manager's relay into the provider
        (DELIVER_EGRESS, "relayingresspoint"),  # Deliver's submission into the relay ingress
        (SENDER_IP, "mxgate"),  # the pipeline's own field: the original sender
        (SENDER_IP, "ingresspoint"),  # the MX (Mail Manager's OPEN ingress point)
    ]
    assert alice.received[1].protocol == "ESMTPSA"  # STARTTLS, then AUTH
    view = alice.provider
    assert view is not None
    assert view.connecting_ip == RELAY_EGRESS
    assert view.sender_ip == SENDER_IP  # both gateway addresses listed: the sender is found
    # skipping only the last hop (365's "automatically detect and skip the last IP") would
    # judge the Deliver function's address as the sender's: both must be listed
    assert view.sender_ip_skipping_last_hop_only == DELIVER_EGRESS


@pytest.mark.parametrize("order", ["envelope-first", "object-first"])
def test_either_half_may_come_first_and_one_execution_starts(sandbox: Sandbox, order: str) -> None:
    sandbox.arrival_order = order  # type: ignore[assignment]
    try:
        report = sandbox.send(
            b"From: a@shop.example\r\nSubject: order\r\n\r\nx\r\n",
            mail_from="a@shop.example",
            recipients=["alice@nutrition.co", "orders@customer-support.nutrition.co"],
        )
    finally:
        sandbox.arrival_order = "envelope-first"
    assert [r.outcome for r in report.recipients] == ["delivered", "handed_to_app"]
    executions = boto3.client("stepfunctions", region_name=REGION).list_executions(
        stateMachineArn=sandbox.state_machine
    )["executions"]
    assert [e["name"] for e in executions].count(report.message_id) == 1


def test_recipients_the_traffic_policy_refuses_are_reported_at_rcpt(sandbox: Sandbox) -> None:
    report = sandbox.send(
        b"Subject: x\r\n\r\nx\r\n",
        mail_from="a@shop.example",
        recipients=["someone@elsewhere.example", "no-such-user@nutrition.co", "alice@nutrition.co"],
    )
    refused, unknown, alice = report.recipients
    assert refused.outcome == "refused"
    assert re.match(r"550 5\.7\.1 Recipient refused by policy", refused.detail)
    # the directory's address list, filled from the sandbox's routes as each deploy fills it
    assert unknown.outcome == "refused"
    assert re.match(r"550 5\.1\.1 Recipient address rejected: user unknown", unknown.detail)
    assert alice.outcome == "delivered"
