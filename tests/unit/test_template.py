"""Template loading: intrinsic functions, parameters, and the example template itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxgate.errors import ConfigError
from mxgate.mailmanager.resources import load_mail_manager
from mxgate.mailmanager.template import Resolver, read_samconfig_parameters, read_template
from tests.support import REPO


def resolver(tmp_path: Path, text: str, **parameters: str) -> Resolver:
    path = tmp_path / "template.yaml"
    path.write_text(text)
    return Resolver(read_template(path), parameters)


TEMPLATE = """
Parameters:
  Domain: {Type: String, Default: example.com}
  Mode: {Type: String, Default: "off", AllowedValues: ["on", "off"]}
  Hosts: {Type: CommaDelimitedList, Default: "a,b"}
Conditions:
  On: !Equals [!Ref Mode, "on"]
Resources:
  Bucket: {Type: AWS::S3::Bucket}
  Relay:
    Type: AWS::SES::MailManagerRelay
    Properties: {ServerName: mx.example.com, ServerPort: 25, Authentication: {NoAuthentication: {}}}
  Thing:
    Type: Custom::Thing
    Properties:
      Sub: !Sub "@${Domain} in ${AWS::Region} for ${AWS::StackName}, literal ${!Domain}"
      SubMap: !Sub ["${x}-${Domain}", {x: !Ref Bucket}]
      Join: !Join [":", [!Ref Domain, !Select [1, !Ref Hosts]]]
      Arn: !GetAtt Relay.RelayArn
      Id: !GetAtt Relay.RelayId
      If: !If [On, "yes", !Ref AWS::NoValue]
      List: [1, !If [On, 2, !Ref AWS::NoValue], 3]
      Split: !Split [",", "x,y"]
"""


def test_intrinsics_resolve(tmp_path):
    r = resolver(tmp_path, TEMPLATE)
    props = r.resolve(r.resources["Thing"]["Properties"], "Thing")
    assert props["Sub"] == "@example.com in us-east-1 for mxgate, literal ${Domain}"
    assert props["SubMap"] == "mxgate-bucket-example.com"
    assert props["Join"] == "example.com:b"
    assert props["Arn"] == "arn:aws:ses:us-east-1:000000000000:mailmanager-relay/Relay"
    assert props["Id"] == "Relay"
    assert "If" not in props  # AWS::NoValue removes the key
    assert props["List"] == [1, 3]
    assert props["Split"] == ["x", "y"]


def test_parameters_and_conditions(tmp_path):
    r = resolver(tmp_path, TEMPLATE, Mode="on", Domain="nutrition.co")
    props = r.resolve(r.resources["Thing"]["Properties"], "Thing")
    assert props["If"] == "yes"
    assert props["List"] == [1, 2, 3]
    assert props["Sub"].startswith("@nutrition.co")


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"Mode": "maybe"}, "Mode='maybe' is not one of"),
        ({"Nope": "1"}, "undeclared parameters: \\['Nope'\\]"),
    ],
)
def test_bad_parameter_values(tmp_path, parameters, message):
    with pytest.raises(ConfigError, match=message):
        resolver(tmp_path, TEMPLATE, **parameters)


def test_broken_references_name_their_place(tmp_path):
    r = resolver(tmp_path, TEMPLATE.replace("!Ref Bucket", "!Ref Buckt"))
    with pytest.raises(ConfigError, match=r"Thing\.SubMap.*unknown parameter or resource 'Buckt'"):
        r.resolve(r.resources["Thing"]["Properties"], "Thing")


def test_samconfig_parameter_overrides():
    assert read_samconfig_parameters(REPO / "samconfig.toml")["EmployeeDomain"] == "nutrition.co"


def test_the_example_template_loads_with_both_modes():
    default = load_mail_manager(REPO / "template.yaml")
    assert [r.Name for r in default.rule_sets["RuleSet"].Rules] == ["archive", "store"]
    direct = load_mail_manager(REPO / "template.yaml", {"DirectMode": "true"})
    rules = direct.rule_sets["RuleSet"].Rules
    assert [r.Name for r in rules] == [
        "archive",
        "store-returned",
        "store-own-domain",
        "direct-m365",
        "direct-workspace",
        "store",
    ]
    assert rules[-1].Unless  # in direct mode employees are relayed, not stored
