"""The directory's address list: what the routes file puts in it, what the shipped traffic
policy makes of it at RCPT, and how `mxgate address-list` treats it on this machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mxgate.cli import main
from mxgate.local.bootstrap import Bootstrap
from mxgate.local.ingress import address_problem, rcpt_refusal
from mxgate.local.logs import VendedLogs
from mxgate.local.settings import LocalSettings
from mxgate.mailmanager.facts import SessionFacts
from mxgate.mailmanager.traffic import TrafficVerdict, evaluate_traffic_policy
from mxgate.message.text import shown
from mxgate.routing.recipients import directory_addresses
from mxgate.routing.routes import Routes, load_routes
from tests.support import REPO, local_config

ROUTES = load_routes(REPO / "config" / "routes.yaml")


def test_the_list_holds_each_user_and_app_address_with_its_tags():
    entries = directory_addresses(ROUTES)
    assert {"alice@nutrition.co", "alice+*@nutrition.co", "carol+*@nutrition.co"} <= set(entries)
    assert {"orders@customer-support.nutrition.co", "returns+*@customer-support.nutrition.co"} <= (
        set(entries)
    )
    assert not any(entry.startswith("*@") for entry in entries)  # unknown users are refused
    assert "postmaster@nutrition.co" in entries  # RFC 5321 4.5.1, though the routes omit it
    assert entries == sorted(set(entries))


def test_unknown_users_for_the_default_host_put_the_whole_domain_in():
    document = ROUTES.model_dump()
    document["directory"]["unknown_users"] = "default"
    entries = directory_addresses(Routes.model_validate(document))
    assert "*@nutrition.co" in entries
    assert "*@customer-support.nutrition.co" not in entries  # app addresses stay exact


@pytest.fixture
def bootstrap(tmp_path: Path) -> Bootstrap:
    settings = LocalSettings(home=tmp_path / "home", config=local_config(tmp_path))
    return Bootstrap(settings)


@pytest.mark.parametrize(
    ("recipient", "verdict", "unlisted"),
    [
        ("alice@nutrition.co", TrafficVerdict.ACCEPT, None),
        ("Alice+Orders@Nutrition.co", TrafficVerdict.ACCEPT, None),
        ("returns@customer-support.nutrition.co", TrafficVerdict.ACCEPT, None),
        ("PostMaster@nutrition.co", TrafficVerdict.ACCEPT, None),
        ("no-such-user@nutrition.co", TrafficVerdict.REJECT, "Recipients"),
        ("hr@customer-support.nutrition.co", TrafficVerdict.REJECT, "Recipients"),
        ("alice+x%elsewhere.example@nutrition.co", TrafficVerdict.REJECT, None),  # the DENY
        ("elsewhere.example!alice@nutrition.co", TrafficVerdict.REJECT, None),
        ('"alice@elsewhere.example"@nutrition.co', TrafficVerdict.REJECT, None),
        ("alice@elsewhere.example", TrafficVerdict.REJECT, None),
    ],
)
def test_the_shipped_policy_at_rcpt(bootstrap, recipient, verdict, unlisted):
    (listener, *_) = bootstrap.setup.listeners
    facts = SessionFacts(sender_ip="198.51.100.7", tls_protocol="TLS1_3")
    decision = evaluate_traffic_policy(
        listener.traffic_policy, recipient, facts, bootstrap.address_book()
    )
    assert (decision.verdict, decision.unlisted) == (verdict, unlisted)
    if verdict is TrafficVerdict.REJECT:
        expected = "550 5.1.1" if unlisted else "550 5.7.1"
        assert rcpt_refusal(decision).startswith(expected)


def test_the_directory_list_is_read_from_the_routes_file_never_edited(tmp_path, capsys):
    config = local_config(tmp_path)
    home = str(tmp_path / "home")
    code = main(["address-list", "add", "Recipients", "erin@nutrition.co", "--home", home,
                 "--config", str(config)])  # fmt: skip
    assert code == 1
    assert "add the address to config/routes.yaml" in capsys.readouterr().err
    assert main(["address-list", "list", "Recipients", "--json", "--home", home, "--config",
                 str(config)]) == 0  # fmt: skip
    shown_list = json.loads(capsys.readouterr().out)
    assert shown_list["addresses"] == directory_addresses(ROUTES)
    assert shown_list["source"].endswith("routes.yaml")


def test_a_routes_file_with_a_new_user_lets_that_user_in(tmp_path):
    document = yaml.safe_load((REPO / "config" / "routes.yaml").read_text())
    document["directory"]["users"]["erin@nutrition.co"] = "m365"
    routes = tmp_path / "routes.yaml"
    routes.write_text(yaml.safe_dump(document))
    settings = LocalSettings(
        home=tmp_path / "home", config=local_config(tmp_path, routes=str(routes))
    )
    bootstrap = Bootstrap(settings)
    policy = bootstrap.setup.listeners[0].traffic_policy
    decision = evaluate_traffic_policy(
        policy, "erin@nutrition.co", SessionFacts(sender_ip="192.0.2.1"), bootstrap.address_book()
    )
    assert decision.verdict is TrafficVerdict.ACCEPT


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("alice@nutrition.co", None),
        ("jürg@nutrition.co", None),
        ("caf\udce9@nutrition.co", "not UTF-8"),  # aiosmtpd's surrogateescape of a Latin-1 byte
        ("bo\x00b@nutrition.co", "a control character"),
        ("bo\x07b@nutrition.co", "a control character"),
        ("bo\x7fb@nutrition.co", "a control character"),
    ],
)
def test_envelope_addresses_with_bad_bytes_are_named(address, problem):
    assert address_problem(address) == problem


def test_the_json_logs_survive_bytes_that_are_not_utf8(tmp_path):
    logs = VendedLogs(tmp_path)
    logs.write("traffic-policy.jsonl", {"recipient": "caf\udce9@nutrition.co"})
    (line,) = (tmp_path / "traffic-policy.jsonl").read_text().splitlines()
    assert json.loads(line) == {"recipient": "caf\udce9@nutrition.co"}
    assert "\\udce9" in line


def test_control_characters_are_shown_not_written():
    assert shown("bo\x07b\x00@x\x1b[2J") == "bo\\x07b\\x00@x\\x1b[2J"
    assert shown("jürg@nutrition.co") == "jürg@nutrition.co"
