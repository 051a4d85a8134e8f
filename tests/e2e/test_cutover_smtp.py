"""`mxgate check --smtp` against a running gateway (what `make run` starts, on free ports): the
seed's `openssl s_client` test as a command, and `--send-test` followed to the mailbox."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO, RunningGateway, local_config, quiet_dns, start_gateway

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, Path]]:
    base = tmp_path_factory.mktemp("cutover")
    config = local_config(base)
    started = start_gateway(base / "home", config)
    yield started, config
    started.stop()


def check(gateway: tuple[RunningGateway, Path], *args: str) -> tuple[int, dict[str, Any]]:
    running, config = gateway
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mxgate",
            "check",
            "--domain",
            "nutrition.co",
            "--smtp",
            f"127.0.0.1:{running.smtp_port}",
            "--resolver",
            f"127.0.0.1:{quiet_dns().port}",
            "--home",
            str(running.home),
            "--config",
            str(config),
            "--json",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, json.loads(done.stdout)


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}


def test_the_ingress_answers_like_the_seed_s_openssl_test(
    gateway: tuple[RunningGateway, Path],
) -> None:
    _, report = check(gateway)
    found = {c["name"]: c for c in report["checks"]}
    assert found["smtp.greeting"]["status"] == "pass"
    assert found["smtp.greeting"]["summary"].startswith("220 ")
    assert found["smtp.starttls"]["status"] == "pass"
    assert found["smtp.starttls"]["summary"].startswith("STARTTLS: TLSv1.")
    # the local gateway's certificate names 127.0.0.1 but is self-signed
    assert found["smtp.certificate"]["status"] == "warn"
    assert found["smtp.certificate"]["summary"] == (
        "the certificate matches 127.0.0.1 but does not verify"
    )
    assert found["smtp.size"] == {
        **found["smtp.size"],
        "status": "pass",
        "summary": "SIZE 41943040 advertised",
    }
    assert found["smtp.message"]["status"] == "pass"
    assert "nothing sent" in found["smtp.message"]["summary"]
    assert "delivery.terminal" not in found


def test_send_test_follows_the_message_to_its_mailbox(
    gateway: tuple[RunningGateway, Path],
) -> None:
    running, _ = gateway
    _, report = check(gateway, "--send-test", "--rcpt", "alice@nutrition.co")
    found = {c["name"]: c for c in report["checks"]}
    assert found["smtp.message"]["status"] == "pass"
    assert found["smtp.message"]["summary"].startswith(
        "the test message was accepted: 250 2.0.0 Ok: queued as "
    )
    assert found["delivery.terminal"]["status"] == "pass"
    assert "alice@nutrition.co delivered" in found["delivery.terminal"]["summary"]
    assert found["delivery.return-path"]["status"] == "pass"
    assert found["delivery.return-path"]["summary"] == (
        "Return-Path <mxgate-check@check.invalid> preserved"
    )
    assert found["delivery.authentication-results"]["status"] == "pass"
    copy = Path(found["delivery.return-path"]["subject"])
    assert copy.parent == running.mailbox("workspace", "alice@nutrition.co")
    assert b"X-Mxgate-Check: mxgate-check-" in copy.read_bytes()
