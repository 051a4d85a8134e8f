"""A sender listed in a DNS blocklist is refused at SMTP time when the template asks for it:
the template's blocklist add-on (BlocklistAddon) bound to a DNSBL zone served on loopback."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dnsserver import Zone, ZoneServer
from tests.support import RunningGateway, local_config, start_gateway, wait_for

pytestmark = pytest.mark.e2e

LISTED_CLIENT = "127.0.0.2"  # the zone lists it; 127.0.0.1 it does not


@pytest.fixture(scope="module")
def blocklist() -> Iterator[ZoneServer]:
    zone = Zone()
    zone.add("2.0.0.127.bl.test", "A", "127.0.0.4")
    server = ZoneServer(zone)
    yield server
    server.stop()


def gateway(base: Path, dns_port: int, **dnsbl: Any) -> RunningGateway:
    config_dir = base / "config"
    config_dir.mkdir(parents=True)
    addon = {"zone": "bl.test", "nameservers": ["127.0.0.1"], "port": dns_port, **dnsbl}
    config = local_config(
        config_dir,
        parameters={"SubmissionIngress": "false", "BlocklistAddon": "ABUSIX_MAIL_INTELLIGENCE"},
        addons={"Blocklist": {"dnsbl": addon}},
    )
    return start_gateway(base / "home", config)


@pytest.fixture(scope="module")
def open_gateway(
    tmp_path_factory: pytest.TempPathFactory, blocklist: ZoneServer
) -> Iterator[RunningGateway]:
    started = gateway(
        tmp_path_factory.mktemp("dnsbl-open"), blocklist.port, codes={"127.0.0.4": "XBL"}
    )
    yield started
    started.stop()


def session(port: int, client: str = "127.0.0.1") -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(client, 0))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    smtp.starttls(context=context)
    smtp.ehlo("client.example")
    return smtp


def test_a_listed_sender_is_refused_for_every_recipient(open_gateway: RunningGateway) -> None:
    with session(open_gateway.smtp_port, LISTED_CLIENT) as smtp:
        smtp.mail("buyer@shop.example")
        code, reply = smtp.rcpt("alice@nutrition.co")
    assert code == 550
    assert reply.decode() == (
        "5.7.1 Recipient refused by policy (PolicyStatements[1] (DENY): "
        "127.0.0.2 is listed in bl.test (XBL))"
    )


def test_an_unlisted_sender_is_accepted_and_delivered(open_gateway: RunningGateway) -> None:
    with session(open_gateway.smtp_port) as smtp:
        smtp.mail("buyer@shop.example")
        assert smtp.rcpt("alice@nutrition.co")[0] == 250
        code, _ = smtp.data(b"From: buyer@shop.example\r\nSubject: not listed\r\n\r\nHi.\r\n")
    assert code == 250
    wait_for(lambda: list(open_gateway.mailbox("workspace", "alice@nutrition.co").glob("*")))


def test_the_traffic_policy_log_shows_the_add_on_result(open_gateway: RunningGateway) -> None:
    with session(open_gateway.smtp_port, LISTED_CLIENT) as smtp:
        smtp.mail("buyer@shop.example")
        smtp.rcpt("carol@nutrition.co")
    log = (open_gateway.home / "logs" / "traffic-policy.jsonl").read_text()
    assert "Blocklist addon.listed (127.0.0.2 is listed in bl.test (XBL)) is True" in log
