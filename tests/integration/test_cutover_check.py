"""`mxgate check --json` against a DNS server on loopback serving a correct zone and a bad one
(SPF that authorises the gateway and an SES range, MX elsewhere, no DMARC)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mxgate.cli import main
from tests.dnsserver import Zone, ZoneServer
from tests.mailtools import make_keys
from tests.support import local_config

TARGET = "inbound-smtp.mxgate.test"
GATEWAY_IP = "192.0.2.25"
KEY = make_keys(1024).public


def zone() -> Zone:
    zone = Zone()
    zone.add(TARGET, "A", GATEWAY_IP)
    zone.add("_spf.google.com", "TXT", "v=spf1 ip4:172.217.0.0/19 ~all")
    zone.add("spf.protection.outlook.com", "TXT", "v=spf1 ip4:40.92.0.0/15 -all")
    zone.add("amazonses.com", "TXT", "v=spf1 ip4:199.255.192.0/22 -all")
    # nutrition.co: what a cutover should look like
    zone.add("nutrition.co", "MX", TARGET)
    zone.add("customer-support.nutrition.co", "MX", TARGET)
    zone.add(
        "nutrition.co",
        "TXT",
        "v=spf1 include:_spf.google.com include:spf.protection.outlook.com -all",
    )
    zone.add("_dmarc.nutrition.co", "TXT", "v=DMARC1; p=reject; rua=mailto:dmarc@nutrition.co")
    for selector in ("google", "selector1", "selector2"):
        zone.add(f"{selector}._domainkey.nutrition.co", "TXT", f"v=DKIM1; k=rsa; p={KEY}")
    # broken.example: SPF naming the gateway and SES, MX elsewhere, no DMARC
    zone.add("broken.example", "MX", "aspmx.l.google.com")
    zone.add("broken.example", "TXT", f"v=spf1 ip4:{GATEWAY_IP} include:amazonses.com ~all")
    zone.add("google._domainkey.broken.example", "TXT", f"v=DKIM1; k=rsa; p={KEY}")
    return zone


@pytest.fixture(scope="module")
def dns() -> Iterator[ZoneServer]:
    server = ZoneServer(zone())
    yield server
    server.stop()


def run_check(tmp_path: Path, dns: ZoneServer, *args: str) -> int:
    config = local_config(tmp_path)
    return main(
        [
            "check",
            "--config",
            str(config),
            "--home",
            str(tmp_path / "home"),
            "--resolver",
            f"127.0.0.1:{dns.port}",
            "--mx-target",
            TARGET,
            *args,
        ]
    )


def check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dns: ZoneServer, *args: str
) -> tuple[int, dict[str, Any]]:
    code = run_check(tmp_path, dns, "--json", *args)
    return code, json.loads(capsys.readouterr().out)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{c['name']} {c['subject']}": c for c in report["checks"]}


def test_a_correct_zone_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dns: ZoneServer
) -> None:
    code, report = check(tmp_path, capsys, dns, "--domain", "nutrition.co")
    checks = by_name(report)
    assert code == 0
    assert report["counts"]["fail"] == 0
    for name in (
        "mx nutrition.co",
        "mx customer-support.nutrition.co",
        "spf nutrition.co",
        "dmarc nutrition.co",
        "dkim nutrition.co",
    ):
        assert checks[name]["status"] == "pass", checks[name]
    assert checks["mx nutrition.co"]["evidence"] == [f"MX {TARGET} (TTL 300s)"]
    # live without a test subdomain tried first: the seed's advice, as a warning
    assert checks["test-subdomain nutrition.co"]["status"] == "warn"
    spf = checks["spf nutrition.co"]
    assert f"check_host({GATEWAY_IP}, nutrition.co) = fail: {GATEWAY_IP} is not permitted" in (
        " ".join(spf["evidence"])
    )
    assert {item["provider"] for item in report["checklist"]} == {
        "Google Workspace",
        "Microsoft 365",
    }
    assert GATEWAY_IP in report["checklist"][0]["value"]


def test_a_bad_zone_is_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dns: ZoneServer
) -> None:
    code, report = check(tmp_path, capsys, dns, "--domain", "broken.example")
    checks = by_name(report)
    assert code == 1
    mx = checks["mx broken.example"]
    assert mx["status"] == "fail"
    assert (
        mx["summary"]
        == f"MX points elsewhere (aspmx.l.google.com), not at the ingress point {TARGET}"
    )
    assert mx["fix"] == f"publish `broken.example. MX 10 {TARGET}.`"
    spf = checks["spf broken.example"]
    assert spf["status"] == "fail"
    assert f"authorises the gateway's address {GATEWAY_IP}" in spf["summary"]
    assert "includes the shared range amazonses.com" in spf["summary"]
    assert "does not authorise Microsoft 365's senders" in " ".join(spf["evidence"])
    dmarc = checks["dmarc broken.example"]
    assert dmarc["status"] == "fail"
    assert dmarc["summary"] == "no DMARC record"
    assert dmarc["fix"].startswith("publish `_dmarc.broken.example. TXT")


def test_the_text_report_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dns: ZoneServer
) -> None:
    code = run_check(tmp_path, dns, "--domain", "broken.example")
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  dmarc" in out
    assert "fix: publish `_dmarc.broken.example." in out
    assert "To set by hand (mxgate cannot read these):" in out
