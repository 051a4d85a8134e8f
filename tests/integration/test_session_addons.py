"""The ingress's blocklist lookups against DNS servers on loopback: once per SMTP session, a
deadline that a silent server cannot stretch, and the fail-open / fail-closed choice."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiosmtpd.smtp import Session

from mxgate.cli import main
from mxgate.local.addons import SessionAddons
from mxgate.local.config import LocalConfig
from mxgate.mailmanager.addons import LISTED
from mxgate.mailmanager.models import TrafficPolicy
from tests.dnsserver import Zone, ZoneServer, silent_port
from tests.support import local_config

POLICY = TrafficPolicy.model_validate(
    {
        "DefaultAction": "ALLOW",
        "PolicyStatements": [
            {
                "Action": "DENY",
                "Conditions": [
                    {
                        "BooleanExpression": {
                            "Evaluate": {
                                "Analysis": {"Analyzer": "Blocklist", "ResultField": LISTED}
                            },
                            "Operator": "IS_TRUE",
                        }
                    }
                ],
            }
        ],
    }
)


def addons(port: int, **dnsbl: Any) -> SessionAddons:
    config = LocalConfig.model_validate(
        {
            "addons": {
                "Blocklist": {
                    "dnsbl": {
                        "zone": "bl.test",
                        "nameservers": ["127.0.0.1"],
                        "port": port,
                        **dnsbl,
                    }
                }
            }
        }
    )
    return SessionAddons.for_policy(POLICY, config)


def test_one_lookup_per_session_whatever_the_recipients() -> None:
    zone = Zone(ttl=0)  # nothing cached by the resolver: what is saved is the session's memo
    zone.add("9.2.0.192.bl.test", "A", "127.0.0.2")
    server = ZoneServer(zone)
    try:
        lookups = addons(server.port)

        async def two_sessions() -> list[bool]:
            loop = asyncio.get_running_loop()
            first, second = Session(loop), Session(loop)
            seen = [await lookups.results(first, "192.0.2.9") for _ in range(3)]
            seen.append(await lookups.results(second, "192.0.2.9"))
            return [bool(found["Blocklist"].fields[LISTED]) for found in seen]

        assert asyncio.run(two_sessions()) == [True] * 4
        assert zone.queries[("9.2.0.192.bl.test", "A")] == 2
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("choice", "reply"),
    [
        ("open", None),
        ("closed", "451 4.7.1 Sender blocklist bl.test could not be checked; try again later"),
    ],
)
def test_a_silent_blocklist_fails_open_or_closed(choice: str, reply: str | None) -> None:
    lookups = addons(silent_port(), timeout=0.2, on_lookup_failure=choice)

    async def lookup() -> Any:
        return await lookups.results(Session(asyncio.get_running_loop()), "192.0.2.9")

    results = asyncio.run(lookup())
    result = results["Blocklist"]
    assert result.failed
    assert result.fields[LISTED] is False
    assert lookups.refusal(results) == reply


def test_rules_explain_asks_the_blocklist_for_the_sender_ip(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    zone = Zone()
    zone.add("9.2.0.192.bl.test", "A", "127.0.0.2")
    server = ZoneServer(zone)
    try:
        config = local_config(
            tmp_path,
            parameters={"BlocklistAddon": "ABUSIX_MAIL_INTELLIGENCE"},
            addons={
                "Blocklist": {
                    "dnsbl": {
                        "zone": "bl.test",
                        "nameservers": ["127.0.0.1"],
                        "port": server.port,
                        "codes": {"127.0.0.2": "SBL"},
                    }
                }
            },
        )
        message = tmp_path / "m.eml"
        message.write_bytes(b"From: a@shop.example\r\nSubject: hi\r\n\r\nhi\r\n")
        code = main(
            [
                "rules",
                "explain",
                str(message),
                "--mail-from",
                "a@shop.example",
                "--rcpt",
                "alice@nutrition.co",
                "--ip",
                "192.0.2.9",
                "--config",
                str(config),
                "--home",
                str(tmp_path / "home"),
                "--json",
            ]
        )
    finally:
        server.stop()
    (recipient,) = json.loads(capsys.readouterr().out)["recipients"]
    assert code == 0
    assert recipient["traffic_policy_verdict"] == "REJECT"
    assert recipient["traffic_policy"]["decided_by"] == "PolicyStatements[1] (DENY)"
    assert recipient["traffic_policy"]["statements"][1]["conditions"] == [
        "Blocklist addon.listed (192.0.2.9 is listed in bl.test (SBL)) is True, IS_TRUE: True"
    ]
