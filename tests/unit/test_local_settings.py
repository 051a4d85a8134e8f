"""Every port and path of the local gateway from the environment, and a configuration file
that works wherever it is copied."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from mxgate.errors import ConfigError
from mxgate.local.config import load_config, load_local_config
from mxgate.local.settings import LocalSettings, named_port_variable
from mxgate.local.setup import load_setup
from tests.support import REPO, local_config
from tests.templates import gateway_template


def settings(config: Path, home: Path, **environment: str) -> LocalSettings:
    base = {"MXGATE_CONFIG": str(config), "MXGATE_HOME": str(home)}
    return LocalSettings.from_env({**base, **environment})


def test_every_fixed_variable_is_read():
    given = LocalSettings.from_env(
        {
            "MXGATE_HOME": "/srv/mxgate",
            "MXGATE_CONFIG": "/etc/mxgate/local.yaml",
            "MXGATE_TEMPLATE": "other/template.yaml",
            "MXGATE_SAMCONFIG": "other/samconfig.toml",
            "MXGATE_ROUTES_FILE": "other/routes.yaml",
            "MXGATE_SMTP_HOST": "127.0.0.2",
            "MXGATE_SMTP_PORT": "3525",
            "MXGATE_SMTP_AUTH_PORT": "3587",
            "MXGATE_WORKERS": "3",
            "MXGATE_HOSTNAME": "mx.test",
            "MXGATE_LOG_LEVEL": "DEBUG",
            "MXGATE_LATENCY_LOG": "1",
            "MXGATE_RETRY_SCALE": "0.5",
            "MXGATE_DEFER_POLL": "2",
            "MXGATE_MAILBOX_WORKSPACE_PORT": "3526",
            "MXGATE_INGRESS_SUBMISSIONINGRESSPOINT_PORT": "3588",
            "MXGATE_STATE_TABLE": "not ours: the AWS commands read it",
        }
    )
    assert given.model_dump() == {
        "home": Path("/srv/mxgate"),
        "config": Path("/etc/mxgate/local.yaml"),
        "template": Path("other/template.yaml"),
        "samconfig": Path("other/samconfig.toml"),
        "routes": Path("other/routes.yaml"),
        "smtp_host": "127.0.0.2",
        "smtp_port": 3525,
        "smtp_auth_port": 3587,
        "mailbox_ports": {"WORKSPACE": 3526},
        "ingress_ports": {"SUBMISSIONINGRESSPOINT": 3588},
        "workers": 3,
        "hostname": "mx.test",
        "log_level": "DEBUG",
        "latency_log": True,
        "retry_scale": 0.5,
        "defer_poll": 2.0,
    }
    assert given.explicit("home")
    assert not LocalSettings.from_env({}).explicit("home")


def test_a_bad_value_names_its_variable():
    with pytest.raises(ConfigError) as refused:
        LocalSettings.from_env(
            {"MXGATE_SMTP_AUTH_PORT": "twenty", "MXGATE_MAILBOX_M365_PORT": "70000"}
        )
    assert str(refused.value) == (
        "environment: MXGATE_SMTP_AUTH_PORT: Input should be a valid integer, unable to parse "
        "string as an integer; MXGATE_MAILBOX_M365_PORT: Input should be less than or equal to "
        "65535"
    )


def test_named_listeners_are_spelled_as_variables():
    assert named_port_variable("mailbox_ports", "m365") == "MXGATE_MAILBOX_M365_PORT"
    assert (
        named_port_variable("mailbox_ports", "eu-west.relay") == "MXGATE_MAILBOX_EU_WEST_RELAY_PORT"
    )
    assert (
        named_port_variable("ingress_ports", "SubmissionIngressPoint")
        == "MXGATE_INGRESS_SUBMISSIONINGRESSPOINT_PORT"
    )


def test_every_listening_port_moves_from_the_environment(tmp_path):
    config = local_config(tmp_path)
    setup = load_setup(
        settings(
            config,
            tmp_path / "home",
            MXGATE_SMTP_HOST="127.0.0.3",
            MXGATE_SMTP_PORT="3525",
            MXGATE_SMTP_AUTH_PORT="3587",
            MXGATE_MAILBOX_WORKSPACE_PORT="3526",
            MXGATE_MAILBOX_M365_PORT="3527",
            MXGATE_MAILBOX_INTERNET_PORT="3528",
        )
    )
    assert [(x.ingress_id, x.port) for x in setup.listeners] == [
        ("IngressPoint", 3525),
        ("SubmissionIngressPoint", 3587),
        ("RelayIngressPoint", 3588),  # the AUTH ingress points after the first: the next ports
    ]
    assert setup.config.smtp.host == "127.0.0.3"
    assert {name: host.port for name, host in setup.config.mailbox_hosts.items()} == {
        "workspace": 3526,
        "m365": 3527,
        "internet": 3528,
    }


def test_one_ingress_point_moves_by_its_name(tmp_path):
    setup = load_setup(
        settings(
            local_config(tmp_path),
            tmp_path / "home",
            MXGATE_SMTP_PORT="3525",
            MXGATE_INGRESS_SUBMISSIONINGRESSPOINT_PORT="3600",
        )
    )
    assert [(x.ingress_id, x.port) for x in setup.listeners] == [
        ("IngressPoint", 3525),
        ("SubmissionIngressPoint", 3600),
        ("RelayIngressPoint", 0),
    ]


def test_with_ingress_points_listed_the_smtp_variables_move_the_first_of_each_type(tmp_path):
    second = {
        "Type": "AWS::SES::MailManagerIngressPoint",
        "Properties": {
            "Type": "OPEN",
            "TrafficPolicyId": {"Ref": "TrafficPolicy"},
            "RuleSetId": {"Ref": "RuleSet"},
        },
    }
    template = gateway_template(tmp_path / "template", {"EdgeIngressPoint": second})
    config = local_config(  # listed in this order (the helper writes the keys sorted)
        tmp_path,
        template=str(template),
        parameters={},
        ingress_points={"EdgeIngressPoint": {"port": 4000}, "IngressPoint": {"port": 4001}},
    )
    setup = load_setup(settings(config, tmp_path / "home", MXGATE_SMTP_PORT="3525"))
    assert [(x.ingress_id, x.port) for x in setup.listeners] == [
        ("EdgeIngressPoint", 3525),
        ("IngressPoint", 4001),
    ]


def test_a_variable_for_a_listener_that_does_not_exist_says_which_do(tmp_path):
    config = local_config(tmp_path)
    with pytest.raises(ConfigError) as refused:
        load_config(settings(config, tmp_path / "home", MXGATE_MAILBOX_WORKSPCE_PORT="3526"))
    assert str(refused.value) == (
        "environment: MXGATE_MAILBOX_WORKSPCE_PORT: no mailbox host 'workspce' to move "
        "(did you mean 'MXGATE_MAILBOX_WORKSPACE_PORT'?) (there are: internet, m365, workspace)"
    )
    with pytest.raises(ConfigError, match=r"MXGATE_INGRESS_SUBMISSION_PORT: no ingress point"):
        load_setup(settings(config, tmp_path / "home", MXGATE_INGRESS_SUBMISSION_PORT="3600"))


def test_paths_come_from_the_environment_relative_to_the_working_directory(tmp_path, monkeypatch):
    routes = tmp_path / "elsewhere" / "routes.yaml"
    routes.parent.mkdir()
    shutil.copy(REPO / "config" / "routes.yaml", routes)
    monkeypatch.chdir(tmp_path)
    config = load_config(
        settings(
            local_config(tmp_path),
            tmp_path / "home",
            MXGATE_ROUTES_FILE="elsewhere/routes.yaml",
            MXGATE_TEMPLATE=str(REPO / "template.yaml"),
        )
    )
    assert config.routes == routes
    assert config.template == REPO / "template.yaml"


def copy_of_the_shipped_file(directory: Path, **changes: Any) -> Path:
    document = yaml.safe_load((REPO / "config" / "local.yaml").read_text())
    document.update(changes)
    path = directory / "my-local.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_copy_of_the_local_configuration_works_anywhere(tmp_path, monkeypatch):
    """The shipped file's relative paths are the project's: a copy outside config/ (here in a
    temporary directory) still finds the template, samconfig.toml and the routes file."""
    copy = copy_of_the_shipped_file(tmp_path, smtp={"port": 3525, "auth_port": 3587})
    monkeypatch.chdir(REPO)
    setup = load_setup(LocalSettings(home=tmp_path / "home", config=copy))
    assert setup.config.template == REPO / "template.yaml"
    assert setup.config.samconfig == REPO / "samconfig.toml"
    assert setup.config.routes == REPO / "config" / "routes.yaml"
    assert [x.port for x in setup.listeners] == [3525, 3587, 3588]


def test_relative_paths_are_taken_from_the_project_not_the_file(tmp_path):
    copy = copy_of_the_shipped_file(tmp_path, routes="routes/mine.yaml")
    assert load_local_config(copy, project=REPO).routes == REPO / "routes" / "mine.yaml"


def test_run_from_another_directory_says_where_relative_paths_are_taken_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^config/local.yaml: no local configuration there"):
        load_config(LocalSettings())
    copy = copy_of_the_shipped_file(tmp_path)
    with pytest.raises(ConfigError) as refused:
        load_config(LocalSettings(config=copy))
    assert str(refused.value) == (
        f"{copy}: template: {tmp_path / 'template.yaml'} does not exist (relative paths are "
        f"taken from the project directory, {tmp_path}): run mxgate there, or give an absolute "
        "path, or set MXGATE_TEMPLATE"
    )


def test_an_external_mailbox_host_keeps_a_real_port(tmp_path):
    config = local_config(
        tmp_path,
        mailbox_hosts={
            "workspace": {"port": 2600, "external": True},
            "m365": {"port": 0},
            "internet": {"port": 0},
        },
    )
    moved = load_config(settings(config, tmp_path / "home", MXGATE_MAILBOX_WORKSPACE_PORT="2601"))
    assert moved.mailbox_hosts["workspace"].port == 2601
    with pytest.raises(ConfigError) as refused:
        load_config(settings(config, tmp_path / "home", MXGATE_MAILBOX_WORKSPACE_PORT="0"))
    assert str(refused.value) == (
        "environment: MXGATE_MAILBOX_WORKSPACE_PORT: an external mailbox host needs its real "
        "port, not 0"
    )


def test_the_home_is_resolved_once_and_a_copy_with_another_home_resolves_its_own(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    settings = LocalSettings(home=Path("state"))
    paths = settings.paths
    assert paths.spool == tmp_path / "state" / "spool"
    resolves: list[Path] = []
    real = Path.resolve
    monkeypatch.setattr(Path, "resolve", lambda self, *a: resolves.append(self) or real(self, *a))
    assert settings.paths is paths  # read per message: no system call each time
    assert settings.model_copy().paths is paths
    other = settings.model_copy(update={"home": Path("other")})
    assert other.paths.home == tmp_path / "other"
    assert other.paths is other.paths
    assert resolves == [Path("other")]
    assert settings == LocalSettings(home=Path("state"))  # the memo is no field
