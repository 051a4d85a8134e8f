"""`mxgate rules replay` over a day of demo traffic (`mxgate demo --traffic`): a changed rule
and changed routes list exactly the recipients they affect, old -> new, with the rule trail."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import REPO, local_config
from tests.templates import gateway_template

pytestmark = pytest.mark.e2e

TRAFFIC = 80  # a small office's day


@dataclass
class Demo:
    config: Path
    home: Path  # the demo gateway's state: HOME/demo
    rows: list[dict[str, Any]]


def mxgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mxgate", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    base = tmp_path_factory.mktemp("replay")
    config = local_config(base)
    done = mxgate(
        "demo",
        "--config",
        str(config),
        "--home",
        str(base / "home"),
        "--traffic",
        str(TRAFFIC),
        "--seed",
        "5",
        "--json",
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return Demo(config, base / "home" / "demo", json.loads(done.stdout)["rows"])


def replay(demo: Demo, *args: str) -> dict[str, Any]:
    done = mxgate(
        "rules", "replay", "--config", str(demo.config), "--home", str(demo.home), "--json", *args
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def template_with_rule(directory: Path, rule: dict[str, Any]) -> Path:
    """template.yaml with `rule` just before the rule that stores the message."""
    path = gateway_template(directory)
    document = yaml.safe_load(path.read_text())
    rules = document["Resources"]["RuleSet"]["Properties"]["Rules"]
    at = next(i for i, r in enumerate(rules) if isinstance(r, dict) and r.get("Name") == "store")
    rules.insert(at, rule)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def reached(row: dict[str, Any]) -> bool:
    return row["outcome"] not in ("rejected", "dropped")


def test_a_rule_that_drops_invoices_lists_exactly_their_recipients(
    demo: Demo, tmp_path: Path
) -> None:
    rule = {
        "Name": "hold-invoices",
        "Conditions": [
            {
                "StringExpression": {
                    "Evaluate": {"Attribute": "SUBJECT"},
                    "Operator": "CONTAINS",
                    "Values": ["invoice"],
                }
            }
        ],
        "Actions": [{"Drop": {}}],
    }
    report = replay(demo, "--template", str(template_with_rule(tmp_path, rule)))
    expected = Counter(
        (row["subject"], row["recipient"])
        for row in demo.rows
        if "invoice" in row["subject"].lower() and reached(row)
    )
    assert sum(expected.values()) > 10  # the day had invoices for several people
    changed = Counter((c["subject"], c["recipient"]) for c in report["changed"])
    assert changed == expected
    actual = {(row["subject"], row["recipient"]): row for row in demo.rows}
    for change in report["changed"]:
        row = actual[(change["subject"], change["recipient"])]
        assert change["old"]["outcome"] == row["outcome"]  # the replay agrees with what happened
        assert change["old"]["route"].split(":")[-1] == row["route"].split(":")[-1]
        assert change["new"]["outcome"] == "dropped"
        assert change["new"]["why"] == "rule hold-invoices: Drop"
        assert change["rule_trail"] == [
            (
                "hold-invoices: not evaluated -> MATCH: Conditions[0] held: SUBJECT "
                f"{change['subject']!r} CONTAINS ['invoice']: True"
            ),
            "store: MATCH -> not evaluated",
        ]


def test_changed_routes_move_exactly_carols_mail(demo: Demo, tmp_path: Path) -> None:
    routes = yaml.safe_load((REPO / "config" / "routes.yaml").read_text())
    routes["directory"]["users"]["carol@nutrition.co"] = "workspace"
    moved = tmp_path / "routes.yaml"
    moved.write_text(yaml.safe_dump(routes))
    report = replay(demo, "--template", str(gateway_template(tmp_path)), "--routes", str(moved))
    expected = sum(
        1 for row in demo.rows if row["recipient"] == "carol@nutrition.co" and reached(row)
    )
    assert expected > 0
    assert len(report["changed"]) == expected
    for change in report["changed"]:
        assert change["recipient"] == "carol@nutrition.co"
        assert (change["old"]["route"], change["new"]["route"]) == (
            "mailbox:m365",
            "mailbox:workspace",
        )


def test_the_template_in_use_changes_nothing(demo: Demo, tmp_path: Path) -> None:
    done = mxgate(
        "rules",
        "replay",
        "--config",
        str(demo.config),
        "--home",
        str(demo.home),
        "--template",
        str(gateway_template(tmp_path)),
    )
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    recipients = len(
        {(row["message"], row["recipient"]) for row in demo.rows if row["outcome"] != "rejected"}
    )
    messages = len({row["message"] for row in demo.rows if row["outcome"] != "rejected"})
    assert messages > TRAFFIC
    assert lines[0].startswith(f"Replayed {messages} messages ({recipients} recipients) received ")
    assert lines[-1] == "No recipient's decision would change."
