"""Loading the Mail Manager resources: intrinsics, parameter values, and load errors that
name the resource, the rule (index and name) and the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from mxgate.errors import ConfigError
from mxgate.local.config import load_local_config
from mxgate.local.setup import local_parameter_sources, template_parameters
from mxgate.mailmanager.resources import MailManagerError, load_mail_manager
from mxgate.mailmanager.template import parameter_values, read_samconfig_parameters
from tests.support import REPO, TEMPLATE

ROLE = {"Fn::GetAtt": ["Role", "Arn"]}
BASE: dict[str, Any] = {
    "Parameters": {
        "Domain": {"Type": "String", "Default": "nutrition.co"},
        "Mode": {"Type": "String", "Default": "a", "AllowedValues": ["a", "b"]},
        "Size": {"Type": "Number", "Default": 1000},
    },
    "Conditions": {"ModeB": {"Fn::Equals": [{"Ref": "Mode"}, "b"]}},
    "Mappings": {"Hosts": {"a": {"host": "127.0.0.1"}, "b": {"host": "localhost"}}},
    "Resources": {
        "Role": {"Type": "AWS::IAM::Role", "Properties": {}},
        "Fn": {
            "Type": "AWS::Serverless::Function",
            "Properties": {"CodeUri": "fn/", "Handler": "app.handler", "Runtime": "python3.13"},
        },
        "Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": "inbound"}},
        "Point": {
            "Type": "AWS::SES::MailManagerIngressPoint",
            "Properties": {
                "Type": "OPEN",
                "RuleSetId": {"Fn::GetAtt": ["Rules", "RuleSetId"]},
                "TrafficPolicyId": {"Ref": "Policy"},
            },
        },
        "Policy": {
            "Type": "AWS::SES::MailManagerTrafficPolicy",
            "Properties": {
                "DefaultAction": "DENY",
                "MaxMessageSizeBytes": {"Ref": "Size"},
                "PolicyStatements": [
                    {
                        "Action": "ALLOW",
                        "Conditions": [
                            {
                                "StringExpression": {
                                    "Evaluate": {"Attribute": "RECIPIENT"},
                                    "Operator": "ENDS_WITH",
                                    "Values": [{"Fn::Sub": "@${Domain}"}],
                                }
                            }
                        ],
                    }
                ],
            },
        },
        "Rules": {
            "Type": "AWS::SES::MailManagerRuleSet",
            "Properties": {
                "Rules": [
                    {
                        "Name": "mark",
                        "Actions": [{"AddHeader": {"HeaderName": "X-Seen", "HeaderValue": "1"}}],
                    },
                    {
                        "Name": "relay",
                        "Conditions": [
                            {
                                "BooleanExpression": {
                                    "Evaluate": {
                                        "IsInAddressList": {
                                            "Attribute": "RECIPIENT",
                                            "AddressLists": [
                                                {"Fn::GetAtt": ["Users", "AddressListArn"]}
                                            ],
                                        }
                                    },
                                    "Operator": "IS_TRUE",
                                }
                            }
                        ],
                        "Actions": [{"Relay": {"Relay": {"Ref": "Relay"}, "MailFrom": "PRESERVE"}}],
                    },
                    {
                        "Fn::If": [
                            "ModeB",
                            {
                                "Name": "only-b",
                                "Actions": [{"Archive": {"TargetArchive": {"Ref": "Archive"}}}],
                            },
                            {"Ref": "AWS::NoValue"},
                        ]
                    },
                    {
                        "Name": "notify",
                        "Actions": [
                            {"PublishToSns": {"TopicArn": {"Ref": "Topic"}, "RoleArn": ROLE}},
                            {
                                "InvokeLambda": {
                                    "FunctionArn": {"Fn::GetAtt": ["Fn", "Arn"]},
                                    "InvocationType": "EVENT",
                                    "RoleArn": ROLE,
                                }
                            },
                        ],
                    },
                ]
            },
        },
        "Relay": {
            "Type": "AWS::SES::MailManagerRelay",
            "Properties": {
                "ServerName": {"Fn::FindInMap": ["Hosts", {"Ref": "Mode"}, "host"]},
                "ServerPort": 25,
                "Authentication": {"NoAuthentication": {}},
            },
        },
        "Archive": {"Type": "AWS::SES::MailManagerArchive", "Properties": {}},
        "Users": {"Type": "AWS::SES::MailManagerAddressList", "Properties": {}},
    },
}


def write(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def broken(tmp_path: Path, edit: Any) -> str:
    document = copy.deepcopy(BASE)
    edit(document["Resources"])
    with pytest.raises(MailManagerError) as error:
        load_mail_manager(write(tmp_path, document))
    return str(error.value)


def rules_of(resources: dict[str, Any]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = resources["Rules"]["Properties"]["Rules"]
    return rules


def test_the_base_template_loads_with_intrinsics_resolved(tmp_path):
    config = load_mail_manager(write(tmp_path, BASE))
    _, point = config.ingress_point()
    assert config.traffic_policy(point).MaxMessageSizeBytes == 1000
    condition = config.traffic_policy(point).PolicyStatements[0].Conditions[0].StringExpression
    assert condition is not None
    assert condition.Values == ["@nutrition.co"]
    rules = config.rule_set(point).Rules
    assert [r.Name for r in rules] == ["mark", "relay", "notify"]  # the If chose NoValue
    assert config.relays["Relay"].ServerName == "127.0.0.1"
    notify = rules[2].Actions
    assert notify[0].PublishToSns is not None
    assert notify[0].PublishToSns.TopicArn == "arn:aws:sns:us-east-1:000000000000:inbound"
    assert notify[1].InvokeLambda is not None
    function = config.function(notify[1].InvokeLambda.FunctionArn)
    assert function is not None
    assert (function.logical_id, function.handler) == ("Fn", "app.handler")
    assert function.code_dir == tmp_path / "fn/"


def test_parameters_change_what_loads(tmp_path):
    config = load_mail_manager(write(tmp_path, BASE), {"Mode": "b", "Domain": "example.org"})
    _, point = config.ingress_point()
    assert [r.Name for r in config.rule_set(point).Rules] == ["mark", "relay", "only-b", "notify"]
    assert config.relays["Relay"].ServerName == "localhost"


def test_unknown_field_names_the_rule_and_suggests(tmp_path):
    message = broken(
        tmp_path, lambda r: rules_of(r)[0]["Actions"][0]["AddHeader"].update(HeaderNam="x")
    )
    assert (
        "Rules.Rules[0] (mark).Actions[0].AddHeader.HeaderNam: unknown field 'HeaderNam'" in message
    )
    assert "did you mean 'HeaderName'?" in message


def test_unknown_action_is_an_unknown_field(tmp_path):
    message = broken(tmp_path, lambda r: rules_of(r)[0]["Actions"].append({"Forward": {}}))
    assert "Rules.Rules[0] (mark).Actions[1].Forward: unknown field 'Forward'" in message


def test_wrong_enum_names_the_value(tmp_path):
    message = broken(
        tmp_path, lambda r: rules_of(r)[1]["Actions"][0]["Relay"].update(MailFrom="KEEP")
    )
    assert "Rules.Rules[1] (relay).Actions[0].Relay.MailFrom" in message
    assert "(got 'KEEP')" in message


def test_wrong_enum_in_the_traffic_policy(tmp_path):
    def edit(resources: dict[str, Any]) -> None:
        statement = resources["Policy"]["Properties"]["PolicyStatements"][0]
        statement["Conditions"][0]["StringExpression"]["Operator"] = "ENDSWITH"

    message = broken(tmp_path, edit)
    assert "Policy.PolicyStatements[0].Conditions[0].StringExpression.Operator" in message
    assert "(got 'ENDSWITH')" in message


def test_several_problems_are_reported_together(tmp_path):
    def edit(resources: dict[str, Any]) -> None:
        resources["Policy"]["Properties"]["DefaultAction"] = "MAYBE"
        resources["Archive"]["Properties"]["Retention"] = {"RetentionPeriod": "FOREVER"}

    message = broken(tmp_path, edit)
    assert "2 problems" in message
    assert "Policy.DefaultAction" in message
    assert "Archive.Retention.RetentionPeriod" in message


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda r: rules_of(r)[1]["Actions"][0]["Relay"].update(Relay="NoSuchRelay"),
            "Rules.Rules[1] (relay).Actions[0].Relay.Relay: relay 'NoSuchRelay' is not a resource",
        ),
        (
            lambda r: rules_of(r)[1]["Actions"][0]["Relay"].update(Relay={"Ref": "Archive"}),
            "relay 'Archive' is not a resource of the template (its relays: Relay)",
        ),
        (
            lambda r: rules_of(r)[0]["Actions"].append(
                {"Archive": {"TargetArchive": {"Ref": "Archve"}}}
            ),
            "Rules.Rules[0].Actions[1].Archive.TargetArchive: Ref to unknown parameter or resource 'Archve'",
        ),
        (
            lambda r: rules_of(r)[1]["Conditions"][0]["BooleanExpression"]["Evaluate"][
                "IsInAddressList"
            ].update(AddressLists=["Others"]),
            (
                "Rules.Rules[1] (relay).Conditions[0].BooleanExpression.Evaluate.IsInAddressList"
                ".AddressLists[0]: address list 'Others' is not a resource"
            ),
        ),
        (
            lambda r: r["Point"]["Properties"].update(RuleSetId="Missing"),
            "Point.RuleSetId: rule set 'Missing' is not a resource",
        ),
        (
            lambda r: rules_of(r)[-1]["Actions"][1]["InvokeLambda"].update(
                FunctionArn="arn:aws:lambda:us-east-1:000000000000:function:elsewhere"
            ),
            "Rules.Rules[2] (notify).Actions[1].InvokeLambda.FunctionArn: function",
        ),
    ],
)
def test_broken_references(tmp_path, edit, expected):
    assert expected in broken(tmp_path, edit)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda r: r["Policy"]["Properties"]["PolicyStatements"][0]["Conditions"].append(
                {
                    "IpExpression": {
                        "Evaluate": {"Attribute": "SENDER_IP"},
                        "Operator": "CIDR_MATCHES",
                        "Values": ["10.0.0.1"],
                    }
                }
            ),
            "'10.0.0.1' is not an IPv4 CIDR",
        ),
        (
            lambda r: r["Policy"]["Properties"]["PolicyStatements"][0]["Conditions"].append(
                {
                    "Ipv6Expression": {
                        "Evaluate": {"Attribute": "SENDER_IPV6"},
                        "Operator": "CIDR_MATCHES",
                        "Values": ["10.0.0.0/8"],
                    }
                }
            ),
            "'10.0.0.0/8' is not an IPv6 CIDR",
        ),
        (
            lambda r: rules_of(r)[0].update(
                Conditions=[
                    {
                        "IpExpression": {
                            "Evaluate": {"Attribute": "SOURCE_IP"},
                            "Operator": "CIDR_MATCHES",
                            "Values": ["10.0.0.300"],
                        }
                    }
                ]
            ),
            "'10.0.0.300' is not an IP address or CIDR",
        ),
        (
            lambda r: rules_of(r)[0]["Actions"][0]["AddHeader"].update(HeaderValue="1\r\nBcc: x@y"),
            "a header value cannot contain line breaks",
        ),
        (
            lambda r: rules_of(r)[0]["Actions"][0]["AddHeader"].update(HeaderName="Seen"),
            "Rules.Rules[0] (mark).Actions[0].AddHeader.HeaderName: String should match pattern",
        ),
        (
            lambda r: rules_of(r)[0].update(Actions=[]),
            "Rules.Rules[0] (mark).Actions: List should have at least 1 item",
        ),
        (
            lambda r: r["Relay"]["Properties"].update(
                Authentication={"NoAuthentication": {}, "SecretArn": "x"}
            ),
            "Relay.Authentication",
        ),
    ],
)
def test_invalid_values(tmp_path, edit, expected):
    assert expected in broken(tmp_path, edit)


def test_parameter_values_name_their_source(tmp_path):
    document = BASE
    values = parameter_values(
        document, [("samconfig.toml", {"Mode": "b"}), ("local.yaml", {"Mode": "a"})]
    )
    assert values == {"Mode": "a"}  # later sources win
    with pytest.raises(ConfigError, match=r"local.yaml: parameter 'Mood' is not declared"):
        parameter_values(document, [("local.yaml", {"Mood": "a"})])
    with pytest.raises(ConfigError, match=r"samconfig.toml: parameter Mode='c' is not one of"):
        parameter_values(document, [("samconfig.toml", {"Mode": "c"})])
    with pytest.raises(ConfigError, match=r"x.yaml: parameter Size='big' is not a number"):
        parameter_values(document, [("x.yaml", {"Size": "big"})])
    assert parameter_values(document, [("x", {"Mode": "b", "Size": 12})]) == {
        "Mode": "b",
        "Size": "12",
    }


def test_samconfig_and_the_local_override(tmp_path):
    assert read_samconfig_parameters(REPO / "samconfig.toml")["EmployeeDomain"] == "nutrition.co"
    samconfig = tmp_path / "samconfig.toml"
    samconfig.write_text(
        'version = 0.1\n[default.deploy.parameters]\nparameter_overrides = "DirectMode=\\"true\\" M365Tenant=acme"\n'
    )
    local = tmp_path / "local.yaml"
    local.write_text(
        yaml.safe_dump(
            {
                "template": str(TEMPLATE),
                "samconfig": str(samconfig),
                "routes": str(REPO / "config" / "routes.yaml"),
                "parameters": {"M365Tenant": "contoso", "SubmissionIngress": True},
            }
        )
    )
    config = load_local_config(local)
    parameters = template_parameters(config.template, local_parameter_sources(config, local))
    assert parameters["DirectMode"] == "true"  # from samconfig.toml
    assert parameters["M365Tenant"] == "contoso"  # local.yaml wins
    assert parameters["SubmissionIngress"] == "true"  # YAML true is "true", as in CloudFormation
    loaded = load_mail_manager(TEMPLATE, parameters)
    assert loaded.relays["M365Relay"].ServerName == "contoso.mail.protection.outlook.com"
    assert "SubmissionIngressPoint" in loaded.ingress_points
    names = [r.Name for r in loaded.rule_sets["RuleSet"].Rules]
    assert names == [
        "archive",
        "store-returned",
        "store-own-domain",
        "direct-m365",
        "direct-workspace",
        "store",
    ]


def test_the_repository_template_loads_both_ways():
    for direct in ("true", "false"):
        config = load_mail_manager(TEMPLATE, {"DirectMode": direct, "SubmissionIngress": direct})
        assert config.ingress_points["IngressPoint"].Type == "OPEN"
