"""Which of the template's ingress points listen where on one machine, and their passwords."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mxgate.authn.arc import Sealer
from mxgate.config_files import ConfigFileError
from mxgate.errors import ConfigError
from mxgate.local.bootstrap import Bootstrap
from mxgate.local.config import load_local_config
from mxgate.local.settings import LocalSettings
from mxgate.local.setup import LocalSetup, load_setup
from tests.mailtools import make_keys
from tests.support import REPO, local_config
from tests.templates import gateway_template


def setup_for(tmp_path: Path, resources: dict[str, Any] | None = None, **overrides: Any):
    template = gateway_template(tmp_path / "template", resources)
    config = local_config(tmp_path, template=str(template), **overrides)
    return load_setup(LocalSettings(home=tmp_path / "home", config=config))


def point(kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "Type": "AWS::SES::MailManagerIngressPoint",
        "Properties": {
            "Type": kind,
            "TrafficPolicyId": {"Ref": "TrafficPolicy"},
            "RuleSetId": {"Ref": "RuleSet"},
            **extra,
        },
    }


def test_the_repository_configuration_runs_every_ingress_point(tmp_path):
    setup = setup_for(tmp_path)
    assert [(x.ingress_id, x.ingress.Type, x.port) for x in setup.listeners] == [
        ("IngressPoint", "OPEN", 0),
        ("SubmissionIngressPoint", "AUTH", 0),
        ("RelayIngressPoint", "AUTH", 0),
    ]
    assert setup.listeners[1].smtp_password == "local-submission-password"  # from `secrets:`
    assert setup.listeners[2].smtp_password == "local-relay-password"
    assert setup.primary.ingress_id == "IngressPoint"


def test_several_auth_ingress_points_take_the_ports_after_auth_port(tmp_path):
    config = local_config(tmp_path)
    document = yaml.safe_load(config.read_text())
    document["smtp"] = {"port": 2525, "auth_port": 2587}
    config.write_text(yaml.safe_dump(document))
    setup = load_setup(LocalSettings(home=tmp_path / "home", config=config))
    assert [(x.ingress_id, x.port) for x in setup.listeners] == [
        ("IngressPoint", 2525),
        ("SubmissionIngressPoint", 2587),
        ("RelayIngressPoint", 2588),
    ]


def test_without_the_submission_parameter_the_open_and_relay_ones_run(tmp_path):
    setup = setup_for(tmp_path, parameters={})
    assert [x.ingress_id for x in setup.listeners] == ["IngressPoint", "RelayIngressPoint"]


def test_an_auth_ingress_point_needs_its_secret_locally(tmp_path):
    with pytest.raises(ConfigError, match=r"takes its password from the secret .*SubmissionSecret"):
        setup_for(tmp_path, secrets={})


def test_smtp_password_from_the_template(tmp_path):
    setup = setup_for(
        tmp_path,
        {
            "SubmissionIngressPoint": point(
                "AUTH", IngressPointConfiguration={"SmtpPassword": "s3cret-pw"}
            )
        },
        parameters={},
    )
    assert setup.listeners[1].smtp_password == "s3cret-pw"


def test_two_open_ingress_points_need_their_own_ports(tmp_path):
    resources = {"Second": point("OPEN")}
    with pytest.raises(ConfigError, match="IngressPoint and Second would both listen on port 2525"):
        setup_for(tmp_path, resources, parameters={}, smtp={"port": 2525, "auth_port": 0})
    setup = setup_for(
        tmp_path,
        resources,
        parameters={},
        ingress_points={"Second": {"port": 0}},
    )
    assert [x.ingress_id for x in setup.listeners] == ["Second"]  # only those listed run


def test_an_unknown_ingress_point_in_the_local_configuration(tmp_path):
    with pytest.raises(ConfigError, match=r"no ingress point 'Nope' in the template"):
        setup_for(tmp_path, ingress_points={"Nope": {"port": 0}})


def test_the_local_configuration_reports_every_problem_with_its_place(tmp_path):
    local = tmp_path / "local.yaml"
    local.write_text(
        (REPO / "config" / "local.yaml")
        .read_text()
        .replace("  M365Relay: m365", "  M365Relay: m356")
        .replace("auth_port: 2587", "auth_prot: 2587")
        .replace("outbound: internet", "outbound: internal")
    )
    with pytest.raises(ConfigFileError) as refused:
        load_local_config(local)
    assert [str(p) for p in refused.value.problems] == [
        "smtp.auth_prot: unknown field 'auth_prot' (did you mean 'auth_port'?)",
        (
            "outbound: no mailbox host 'internal' (did you mean 'internet'?) "
            "(mailbox_hosts: internet, m365, workspace)"
        ),
        (
            "relays.M365Relay: no mailbox host 'm356' (did you mean 'm365'?) "
            "(mailbox_hosts: internet, m365, workspace)"
        ),
    ]


def _sealing(tmp_path: Path, secrets: dict[str, dict[str, str]]) -> Any:
    base = yaml.safe_load((REPO / "config" / "local.yaml").read_text())
    parameters = {
        **base.get("parameters", {}),
        "ArcSealKeySecretArn": "mxgate-arc-seal",
        "ArcSealDomain": "Nutrition.co.",
    }
    return setup_for(tmp_path, parameters=parameters, secrets={**base["secrets"], **secrets})


def sealer_of(setup: LocalSetup) -> Sealer | None:
    """The sealer the composition root gives the workers of this setup."""
    return Bootstrap(setup.settings, given_setup=setup).sealer()


def test_arc_sealing_from_the_template_parameters_and_a_local_secret(tmp_path):
    pem = make_keys().private.decode()
    sealer = sealer_of(_sealing(tmp_path, {"mxgate-arc-seal": {"private_key": pem}}))
    assert sealer is not None
    assert (sealer.domain, sealer.selector) == ("nutrition.co", "arc")  # the default selector
    assert sealer_of(setup_for(tmp_path)) is None  # no secret named: no sealing


@pytest.mark.parametrize(
    ("secrets", "problem"),
    [
        ({}, r"ArcSealKeySecretArn names the secret mxgate-arc-seal; give its PEM key"),
        ({"mxgate-arc-seal": {"private_key": "not a key"}}, r"not an RSA or Ed25519 private key"),
    ],
)
def test_arc_sealing_problems_are_clear(tmp_path, secrets, problem):
    with pytest.raises(ConfigError, match=problem):
        sealer_of(_sealing(tmp_path, secrets))


def test_a_blocklist_add_on_needs_a_local_stand_in(tmp_path):
    with pytest.raises(ConfigError) as raised:
        setup_for(tmp_path, parameters={"BlocklistAddon": "ABUSIX_MAIL_INTELLIGENCE"})
    # statement [0] is the source-route DENY, [1] the blocklist's
    assert str(raised.value).endswith(
        "the template's add-ons cannot run here:\n"
        "  TrafficPolicy.PolicyStatements[1].Conditions[0].BooleanExpression.Evaluate.Analysis"
        ".Analyzer: Blocklist (an add-on instance of the template) has no local stand-in: add "
        "`addons: {Blocklist: {dnsbl: {zone: ...}}}` to the local configuration"
    )


def test_a_result_field_the_dnsbl_does_not_give_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"'IN_ZEN' in a BooleanExpression is not a result"):
        setup_for(
            tmp_path,
            parameters={"BlocklistAddon": "X", "BlocklistResultField": "IN_ZEN"},
            addons={"Blocklist": {"dnsbl": {"zone": "zen.example"}}},
        )
    renamed = setup_for(
        tmp_path / "renamed",
        parameters={"BlocklistAddon": "X", "BlocklistResultField": "IN_ZEN"},
        addons={"Blocklist": {"dnsbl": {"zone": "zen.example", "listed_field": "IN_ZEN"}}},
    )
    assert renamed.config.addons["Blocklist"].dnsbl.listed_field == "IN_ZEN"
