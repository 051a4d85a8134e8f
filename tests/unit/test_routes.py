"""The routes file: validation, per-route policies, and the published JSON Schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mxgate.config_files import ConfigFileError
from mxgate.errors import ConfigError
from mxgate.routing.parameters import substitute
from mxgate.routing.routes import Routes, load_routes, parse_duration, routes_schema
from mxgate.workflow.defer import backoff
from tests.support import REPO, ROUTES, routes_parameters_of_samconfig

SCHEMA = REPO / "config" / "routes.schema.json"


def document(**changes: Any) -> dict[str, Any]:
    """The shipped routes file with the example deployment's parameters filled in."""
    base, problems = substitute(
        yaml.safe_load(ROUTES.read_text()), routes_parameters_of_samconfig()
    )
    assert problems == []
    base.update(changes)
    return dict(base)


def load(path: Path) -> Routes:
    return load_routes(path, routes_parameters_of_samconfig())


def write(tmp_path: Path, content: dict[str, Any]) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def test_published_schema_is_the_one_the_models_generate():
    """config/routes.schema.json is generated: `mxgate routes schema --output` refreshes it."""
    assert json.loads(SCHEMA.read_text()) == routes_schema()
    done = subprocess.run(
        [sys.executable, "-m", "mxgate", "routes", "schema"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert done.stdout == SCHEMA.read_text()


def test_the_example_routes_file_is_valid_by_the_schema_and_the_models():
    jsonschema.validate(document(), json.loads(SCHEMA.read_text()))
    routes = load(ROUTES)
    assert {r.name for r in routes.quarantine} >= {"dmarc-reject", "executable-attachment"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("5m", 300), ("1h30m", 5400), ("5d", 432000), ("0.5s", 0.5), (12, 12)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_a_route_overrides_the_default_policy_field_by_field():
    routes = Routes.model_validate(
        document(
            delivery={"queue_lifetime": "2d", "dsn_on_expiry": False},
            apps={
                "orders": {
                    "addresses": ["orders@customer-support.nutrition.co"],
                    "delivery": {"queue_lifetime": "1h"},
                }
            },
        )
    )
    assert routes.policy("orders").queue_lifetime == 3600
    assert routes.policy("orders").dsn_on_expiry is False  # inherited, not the model default
    assert routes.policy("workspace").queue_lifetime == 2 * 86400
    assert routes.policy("workspace").backoff_min == 300  # the Postfix-like default


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        (
            {"destinations": {"workspace": {"transport": "smtp"}, "m365": {}}},
            "an smtp destination needs `host`",
        ),
        (
            {
                "destinations": {
                    "workspace": {"transport": "smtp", "host": "x.example", "username": "u"},
                    "m365": {},
                }
            },
            "`username` and `password_env` go together",
        ),
        (
            {"destinations": {"workspace": {"hooks": ["nope"]}, "m365": {}}},
            "destinations.workspace.hooks[0]: no hook 'nope' (hooks: none)",
        ),
        (
            {"quarantine": [{"name": "x", "routes": ["nowhere"], "when": {"spf": ["fail"]}}]},
            (
                "quarantine[0] (x).routes[0]: no route 'nowhere' (routes: m365, orders, returns, "
                "workspace)"
            ),
        ),
        ({"quarantine": [{"name": "x", "when": {}}]}, "`when` needs at least one condition"),
        (
            {"quarantine": [{"name": "x", "when": {"spf": ["failed"]}}]},
            "quarantine[0] (x).when.spf[0]: Input should be 'pass', 'fail'",
        ),
        (
            {"hooks": {"h": {"url": "https://h.example/x"}}},
            "hooks.h: a hook with `url` needs `secret_env`",
        ),
        ({"hooks": {"h": {"description": "nothing to call"}}}, "hooks.h: a hook needs `function`"),
        (
            {"delivery": {"queue_lifetime": "five days"}},
            (
                "delivery.queue_lifetime: 'five days' is not a duration: write 90s, 5m, 1h30m, 5d or "
                "a number of seconds"
            ),
        ),
        ({"delivery": {"backoff_min": -5}}, "delivery.backoff_min: Input should be greater than"),
        (
            {"delivery": {"oversize": "drop"}},
            "delivery.oversize: Input should be 'claim_check' or 'dead_letter' (got 'drop')",
        ),
        (
            {"destinations": {"workspace": {}, "m365": {"routng_domain": "x.example"}}},
            (
                "destinations.m365.routng_domain: unknown field 'routng_domain' (did you mean "
                "'routing_domain'?)"
            ),
        ),
        (
            {"directory": {"default": "workspce"}},
            (
                "directory.default: no destination 'workspce' "
                "(did you mean 'workspace'?) (destinations: m365, workspace)"
            ),
        ),
        (
            {
                "apps": {
                    "workspace": {"addresses": ["w@customer-support.nutrition.co"]},
                }
            },
            "apps.workspace: 'workspace' names both a destination and an app",
        ),
    ],
)
def test_bad_routes_are_refused_with_the_place(tmp_path, changes, complaint):
    with pytest.raises(ConfigError) as refused:
        load(write(tmp_path, document(**changes)))
    assert complaint in str(refused.value)
    assert str(tmp_path / "routes.yaml") in str(refused.value)
    assert "Value error" not in str(refused.value)  # the validator's own words, placed


def test_every_problem_is_reported_at_once_names_with_field_errors(tmp_path):
    """A dangling name is reported with the field errors, not only once they are fixed."""
    changes = document(
        directory={"default": "workspce", "users": {"carol@nutrition.co": "m356"}},
        delivery={"backoff_min": "5 minutes", "oversize": "drop"},
    )
    changes["destinations"]["m365"]["routng_domain"] = "x.example"
    with pytest.raises(ConfigFileError) as refused:
        load(write(tmp_path, changes))
    assert [p.place for p in refused.value.problems] == [
        "destinations.m365.routng_domain",
        "delivery.oversize",
        "delivery.backoff_min",
        "directory.default",
        "directory.users.carol@nutrition.co",
    ]
    text = str(refused.value)
    assert text.startswith(f"{tmp_path / 'routes.yaml'}: 5 problems:\n  destinations.m365.")
    assert "no destination 'm356' (did you mean 'm365'?)" in text


def test_a_problem_of_the_whole_file_is_placed_too(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigFileError, match=r"routes.yaml: top level: Input should be a valid"):
        load(path)
    path.write_text("")
    with pytest.raises(ConfigFileError, match=r"employee_domains: required field is missing"):
        load(path)


def test_verified_identities_cover_subdomains_and_addresses():
    routes = Routes.model_validate(
        document(verified_identities=["nutrition.co", "ceo@partner.example"])
    )
    assert routes.is_verified("a@nutrition.co")
    assert routes.is_verified("A@Customer-Support.Nutrition.co")
    assert routes.is_verified("ceo@partner.example")
    assert not routes.is_verified("cfo@partner.example")
    assert not routes.is_verified("a@evilnutrition.co")
    default = Routes.model_validate(document())
    assert default.is_verified("orders@customer-support.nutrition.co")
    assert not default.is_verified("buyer@shop.example")


def routes_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mxgate", "routes", "check", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )


def test_routes_check_command(tmp_path):
    done = routes_check(ROUTES)
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout
    done = routes_check(write(tmp_path, document(delivery={"oversize": "drop"})))
    assert done.returncode == 1
    assert "delivery.oversize" in done.stderr
    bad = write(tmp_path, document(delivery={"oversize": "drop", "backoff_min": "5 minutes"}))
    done = routes_check(bad)
    assert done.returncode == 1
    assert done.stderr.splitlines()[1:] == [
        "  delivery.oversize: Input should be 'claim_check' or 'dead_letter' (got 'drop')",
        (
            "  delivery.backoff_min: '5 minutes' is not a duration: write 90s, 5m, 1h30m, 5d or a "
            "number of seconds"
        ),
    ]


def test_the_deferral_schedule_doubles_up_to_its_cap_with_a_repeatable_spread():
    policy = Routes.model_validate(document()).policy("workspace")
    waits = [backoff(policy, attempt, "01A.workspace.0") for attempt in range(1, 8)]
    for attempt, wait in enumerate(waits, start=1):
        base = min(4000, 300 * 2 ** (attempt - 1))
        assert base * 0.9 <= wait <= base * 1.1
    assert waits == [backoff(policy, n, "01A.workspace.0") for n in range(1, 8)]  # seeded
    assert waits != [backoff(policy, n, "01B.workspace.0") for n in range(1, 8)]  # spread


READ_WITHOUT_YAML = """
import json, pathlib, sys
from mxgate.routing.routes import load_routes
load_routes(pathlib.Path(sys.argv[1]), json.loads(sys.argv[2]))
print("yaml" in sys.modules)
"""


def test_the_checked_json_form_is_the_routes_file_the_functions_read(tmp_path):
    """`routes check --write-json` (make sam-build) writes what the functions read on AWS: the
    same routes, placeholders filled at load as in the YAML file, without PyYAML."""
    written = tmp_path / "routes.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mxgate",
            "routes",
            "check",
            str(ROUTES),
            "--write-json",
            str(written),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {written}" in done.stdout
    assert "${EmployeeDomain}" in written.read_text()  # the deployed stack's parameters fill it
    assert load(written) == load(ROUTES)
    read = subprocess.run(
        [
            sys.executable,
            "-c",
            READ_WITHOUT_YAML,
            str(written),
            json.dumps(routes_parameters_of_samconfig()),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert read.stdout.split() == ["False"]


def test_an_invalid_routes_file_writes_no_json(tmp_path):
    written = tmp_path / "routes.json"
    bad = write(tmp_path, document(delivery={"oversize": "drop"}))
    done = subprocess.run(
        [sys.executable, "-m", "mxgate", "routes", "check", str(bad), "--write-json", str(written)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 1
    assert "delivery.oversize" in done.stderr
    assert not written.exists()


def test_a_bad_json_routes_file_is_refused_with_its_place(tmp_path):
    path = tmp_path / "routes.json"
    path.write_text('{"employee_domains": ["nutrition.co"],')
    with pytest.raises(ConfigError, match=r"routes.json: not valid JSON: .*line 1 column"):
        load(path)
    path.write_text(json.dumps(document(delivery={"oversize": "drop"})))
    with pytest.raises(ConfigFileError) as refused:
        load(path)
    assert [str(p) for p in refused.value.problems] == [
        "delivery.oversize: Input should be 'claim_check' or 'dead_letter' (got 'drop')"
    ]
    with pytest.raises(ConfigError, match=r"routes.json: cannot read routes: No such file"):
        load(tmp_path / "missing" / "routes.json")
