"""`mxgate rules explain`, `mxgate rules check` and `mxgate address-list`, run in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mxgate.cli import main
from tests.support import SAMPLES, TEMPLATE, local_config


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    config = local_config(tmp_path)
    home = tmp_path / "home"

    def run(*args: str) -> tuple[int, str, str]:
        code = main([*args, "--home", str(home), "--config", str(config)])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def explain_json(cli, sample: str, *args: str) -> dict:
    code, out, err = cli("rules", "explain", str(SAMPLES / sample), "--json", *args)
    assert code == 0, err
    return json.loads(out)


def test_explain_json_shape(cli):
    report = explain_json(
        cli,
        "01-workspace-employee.eml",
        "--mail-from", "a@shop.example",
        "--rcpt", "alice@nutrition.co",
        "--rcpt", "someone@elsewhere.example",
    )  # fmt: skip
    accepted, refused = report["recipients"]
    assert list(report) == ["recipients"]
    assert {
        k: accepted[k]
        for k in ("recipient", "traffic_policy_verdict", "matched_rules", "actions", "dropped")
    } == {
        "recipient": "alice@nutrition.co",
        "traffic_policy_verdict": "ACCEPT",
        "matched_rules": ["mark-seen", "archive", "store"],
        "actions": ["AddHeader", "Archive", "WriteToS3", "InvokeLambda"],
        "dropped": False,
    }
    assert accepted["traffic_policy"]["decided_by"] == "PolicyStatements[1] (ALLOW)"
    assert [r["rule_name"] for r in accepted["rules"]] == [
        "loop-guard",
        "mark-seen",
        "archive",
        "store",
    ]
    assert accepted["rules"][0]["matched"] is False
    assert "X-Mxgate-Loop absent" in accepted["rules"][0]["reason"]
    assert {
        k: refused[k] for k in ("traffic_policy_verdict", "matched_rules", "actions", "dropped")
    } == {
        "traffic_policy_verdict": "REJECT",
        "matched_rules": [],
        "actions": [],
        "dropped": False,
    }


def test_explain_the_loop_guard(cli):
    report = explain_json(
        cli, "08-mail-loop.eml", "--mail-from", "a@shop.example", "--rcpt", "bob@nutrition.co"
    )
    (bob,) = report["recipients"]
    assert (bob["matched_rules"], bob["actions"], bob["dropped"]) == (
        ["loop-guard"],
        ["Drop"],
        True,
    )


def test_explain_direct_mode_from_a_params_file(cli, tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps([{"ParameterKey": "DirectMode", "ParameterValue": "true"}]))
    report = explain_json(
        cli, "01-workspace-employee.eml", "--mail-from", "a@shop.example", "--rcpt", "alice@nutrition.co",
        "--params", str(params),
    )  # fmt: skip
    (alice,) = report["recipients"]
    assert alice["matched_rules"] == ["mark-seen", "archive", "direct-workspace"]
    assert alice["actions"] == ["AddHeader", "Archive", "Relay"]


def test_explain_without_tls_on_a_tls_required_ingress_point(cli):
    report = explain_json(
        cli, "01-workspace-employee.eml", "--mail-from", "a@shop.example", "--rcpt", "alice@nutrition.co",
        "--tls", "none",
    )  # fmt: skip
    (alice,) = report["recipients"]
    assert alice["traffic_policy_verdict"] == "REJECT"
    assert "530 5.7.0" in alice["traffic_policy"]["decided_by"]


def test_explain_a_message_over_the_size_limit(cli, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"MaxMessageSizeBytes": 100}))
    report = explain_json(
        cli, "01-workspace-employee.eml", "--mail-from", "a@shop.example", "--rcpt", "alice@nutrition.co",
        "--params", str(params),
    )  # fmt: skip
    assert "MaxMessageSizeBytes" in report["recipients"][0]["traffic_policy"]["decided_by"]


def test_explain_human_output(cli):
    code, out, _ = cli(
        "rules", "explain", str(SAMPLES / "08-mail-loop.eml"),
        "--mail-from", "a@shop.example", "--rcpt", "bob@nutrition.co", "--rcpt", "x@elsewhere.example",
    )  # fmt: skip
    assert code == 0
    assert "traffic policy: ACCEPT, decided by PolicyStatements[1] (ALLOW)" in out
    assert (
        "[0] loop-guard: MATCH: Conditions[0] held: X-Mxgate-Loop 'mxgate' EQUALS ['mxgate']" in out
    )
    assert "=> dropped (rule loop-guard: Drop); actions: Drop" in out
    assert "traffic policy: REJECT, decided by DefaultAction (DENY)" in out
    assert "rule set: not reached" in out


def test_explain_uses_the_address_lists(cli, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("parameters: {DirectMode: true}\n")  # a local.yaml-shaped file works too
    assert cli("address-list", "add", "M365Users", "carol@nutrition.co")[0] == 0
    report = explain_json(
        cli, "02-m365-employee.eml", "--mail-from", "a@shop.example", "--rcpt", "carol@nutrition.co",
        "--params", str(params),
    )  # fmt: skip
    assert report["recipients"][0]["matched_rules"] == ["mark-seen", "archive", "direct-m365"]


def test_rules_check_passes_on_the_repository_template(cli):
    code, out, _ = cli("rules", "check")
    assert code == 0, out
    assert out.rstrip().endswith("0 problems")


def test_rules_check_reports_each_problem_with_its_place(cli, tmp_path):
    broken = tmp_path / "broken.yaml"
    text = TEMPLATE.read_text().replace("MailFrom: PRESERVE", "MailFrom: KEEP", 1)
    broken.write_text(text.replace("DefaultAction: DENY", "DefaultAction: NEVER"))
    code, out, _ = cli("rules", "check", "--template", str(broken))
    assert code == 1
    assert (
        "model     TrafficPolicy.DefaultAction: Input should be 'ALLOW' or 'DENY' (got 'NEVER')"
        in out
    )
    assert (
        "model     RelayRuleSet.Rules[0] (relay-m365).Actions[0].Relay.MailFrom: Input should "
        "be 'PRESERVE' or 'REPLACE' (got 'KEEP')"
    ) in out
    assert "cfn-lint  " in out
    assert "E3030 Resources/TrafficPolicy/Properties/DefaultAction" in out


def test_address_list_commands(cli, tmp_path):
    assert cli("address-list", "add", "M365Users", "carol@nutrition.co", "*@m365.nutrition.co")[
        1
    ] == ("M365Users: 2 added, 2 in all\n")
    csv = tmp_path / "users.csv"
    csv.write_text("name,address\nDave,dave@nutrition.co\nCarol,CAROL@nutrition.co\n")
    assert cli("address-list", "import", "M365Users", "--csv", str(csv))[1] == (
        f"M365Users: 2 read from {csv}, 3 in all\n"
    )
    code, out, _ = cli("address-list", "list", "M365Users")
    assert out.split() == ["*@m365.nutrition.co", "carol@nutrition.co", "dave@nutrition.co"]
    code, out, _ = cli("address-list", "list", "--json")
    assert json.loads(out)["lists"][0] | {"file": ""} == {
        "list": "M365Users",
        "name": "mxgate-m365-users",
        "addresses": 3,
        "file": "",
    }
    # a list may be named by its AddressListName as well
    assert cli("address-list", "remove", "mxgate-m365-users", "dave@nutrition.co")[0] == 0
    code, out, _ = cli("address-list", "remove", "M365Users", "nobody@nutrition.co")
    assert code == 1
    assert "not in M365Users: nobody@nutrition.co" in out
    plain = tmp_path / "plain.csv"
    plain.write_text("erin@nutrition.co\nfrank@nutrition.co\n")
    assert cli("address-list", "import", "M365Users", "--csv", str(plain), "--replace")[0] == 0
    assert cli("address-list", "list", "M365Users")[1].split() == [
        "erin@nutrition.co",
        "frank@nutrition.co",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "M365Users", "not-an-address"], "not an address or pattern"),
        (
            ["add", "Nope", "a@b.example"],
            "no address list 'Nope' in the template (it has M365Users, Recipients)",
        ),
    ],
)
def test_address_list_errors(cli, args, message):
    code, _, err = cli("address-list", *args)
    assert code == 1
    assert message in err
