"""Read a CloudFormation / SAM template and resolve its intrinsic functions locally.

Only what a template's Mail Manager resources need is resolved: Ref, Fn::GetAtt, Fn::Sub,
Fn::Join, Fn::If (with Conditions), Fn::Select, Fn::Split, Fn::FindInMap and the pseudo
parameters. References to resources resolve to stable local identifiers: a resource's
logical id for Ref, and an ARN that ends in the logical id for ARN attributes, so the
emulator can find the resource a rule names whichever form the template uses.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mxgate.errors import ConfigError

NO_VALUE = object()
LOCAL_REGION = "us-east-1"
LOCAL_ACCOUNT = "000000000000"
STACK_NAME = "mxgate"

_SHORT_TAGS = {
    "Ref": "Ref",
    "Condition": "Condition",
    **{
        name: f"Fn::{name}"
        for name in (
            "Sub",
            "GetAtt",
            "Join",
            "If",
            "Equals",
            "Not",
            "And",
            "Or",
            "Select",
            "Split",
            "FindInMap",
            "Base64",
            "ImportValue",
            "GetAZs",
            "Cidr",
            "Transform",
            "ToJsonString",
            "Length",
        )
    },
}


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that turns `!Ref x` into `{"Ref": "x"}` and so on."""


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = _SHORT_TAGS.get(tag_suffix)
    if name is None:
        raise yaml.constructor.ConstructorError(
            None, None, f"unknown tag !{tag_suffix}", node.start_mark
        )
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if name == "Fn::GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def read_template(path: Path) -> dict[str, Any]:
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506
    except OSError as error:
        raise ConfigError(f"{path}: cannot read template: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise ConfigError(f"{path}: not a CloudFormation template (no Resources section)")
    return document


def read_samconfig_parameters(path: Path, environment: str = "default") -> dict[str, str]:
    """`parameter_overrides` from samconfig.toml (deploy, then global), as a dict."""
    if not path.exists():
        return {}
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    env = config.get(environment, {})
    for command in ("deploy", "global"):
        overrides = env.get(command, {}).get("parameters", {}).get("parameter_overrides")
        if overrides:
            items = shlex.split(overrides) if isinstance(overrides, str) else list(overrides)
            pairs = (item.split("=", 1) for item in items)
            return dict(pairs)
    return {}


_ARN_ATTRIBUTES = {
    "AWS::SES::MailManagerRelay": {"RelayArn": "mailmanager-relay", "RelayId": None},
    "AWS::SES::MailManagerRuleSet": {"RuleSetArn": "mailmanager-rule-set", "RuleSetId": None},
    "AWS::SES::MailManagerTrafficPolicy": {
        "TrafficPolicyArn": "mailmanager-traffic-policy",
        "TrafficPolicyId": None,
    },
    "AWS::SES::MailManagerArchive": {"ArchiveArn": "mailmanager-archive", "ArchiveId": None},
    "AWS::SES::MailManagerAddressList": {
        "AddressListArn": "mailmanager-address-list",
        "AddressListId": None,
    },
    "AWS::SES::MailManagerIngressPoint": {
        "IngressPointArn": "mailmanager-ingress-point",
        "IngressPointId": None,
        "ARecord": "localhost",
    },
}


def logical_id_of(reference: str) -> str:
    """The logical id inside a local resource reference (a plain id or a local ARN)."""
    return reference.rsplit("/", 1)[-1].rsplit(":", 1)[-1]


@dataclass
class Resolver:
    """Resolves intrinsic functions of one template against parameter values."""

    template: Mapping[str, Any]
    parameters: Mapping[str, str] = field(default_factory=dict)
    region: str = LOCAL_REGION
    account: str = LOCAL_ACCOUNT
    stack: str = STACK_NAME

    def __post_init__(self) -> None:
        self.resources: Mapping[str, Any] = self.template.get("Resources", {})
        self.values: dict[str, Any] = {}
        declared = self.template.get("Parameters", {}) or {}
        unknown = set(self.parameters) - set(declared)
        if unknown:
            raise ConfigError(
                f"parameter values given for undeclared parameters: {sorted(unknown)}"
            )
        for name, spec in declared.items():
            if name in self.parameters:
                raw: Any = self.parameters[name]
            elif isinstance(spec, dict) and "Default" in spec:
                raw = spec["Default"]
            else:
                raise ConfigError(f"parameter {name} has no Default and no value was given")
            allowed = spec.get("AllowedValues") if isinstance(spec, dict) else None
            if allowed and str(raw) not in [str(v) for v in allowed]:
                raise ConfigError(f"parameter {name}={raw!r} is not one of {allowed}")
            kind = spec.get("Type", "String") if isinstance(spec, dict) else "String"
            self.values[name] = (
                [part.strip() for part in str(raw).split(",")]
                if kind == "CommaDelimitedList"
                else str(raw)
            )
        self.pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::Partition": "aws",
            "AWS::StackName": self.stack,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{self.account}:stack/{self.stack}/local",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": NO_VALUE,
        }
        self._conditions: dict[str, bool] = {}

    # --------------------------------------------------------------------------- conditions

    def condition(self, name: str, where: str = "Conditions") -> bool:
        if name not in self._conditions:
            spec = (self.template.get("Conditions") or {}).get(name)
            if spec is None:
                raise ConfigError(f"{where}: unknown condition {name!r}")
            self._conditions[name] = bool(self._condition_value(spec, f"Conditions.{name}"))
        return self._conditions[name]

    def _condition_value(self, spec: Any, where: str) -> Any:
        if isinstance(spec, dict) and len(spec) == 1:
            ((key, arg),) = spec.items()
            if key == "Condition":
                return self.condition(arg, where)
            if key == "Fn::Equals":
                left, right = (self.resolve(v, where) for v in arg)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self._condition_value(arg[0], where)
            if key == "Fn::And":
                return all(self._condition_value(v, where) for v in arg)
            if key == "Fn::Or":
                return any(self._condition_value(v, where) for v in arg)
        return self.resolve(spec, where)

    def resource_enabled(self, logical_id: str) -> bool:
        cond = self.resources[logical_id].get("Condition")
        return cond is None or self.condition(cond, f"Resources.{logical_id}")

    # --------------------------------------------------------------------------- references

    def ref(self, name: str, where: str) -> Any:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.values:
            return self.values[name]
        if name in self.resources:
            resource = self.resources[name]
            if resource.get("Type") == "AWS::S3::Bucket":
                bucket = (resource.get("Properties") or {}).get("BucketName")
                if bucket is not None:
                    return self.resolve(bucket, f"Resources.{name}.Properties.BucketName")
                return f"{self.stack}-{name.lower()}"
            return name
        raise ConfigError(f"{where}: Ref to unknown parameter or resource {name!r}")

    def get_att(self, logical_id: str, attribute: str, where: str) -> str:
        resource = self.resources.get(logical_id)
        if resource is None:
            raise ConfigError(f"{where}: Fn::GetAtt of unknown resource {logical_id!r}")
        kind = resource.get("Type", "")
        known = _ARN_ATTRIBUTES.get(kind)
        if known is not None:
            if attribute not in known:
                raise ConfigError(f"{where}: {kind} has no attribute {attribute!r}")
            suffix = known[attribute]
            if suffix is None:
                return logical_id
            if suffix == "localhost":
                return "localhost"
            return f"arn:aws:ses:{self.region}:{self.account}:{suffix}/{logical_id}"
        if kind == "AWS::S3::Bucket" and attribute == "Arn":
            return f"arn:aws:s3:::{self.ref(logical_id, where)}"
        service = kind.split("::")[1].lower() if kind.count("::") == 2 else "local"
        return f"arn:aws:{service}:{self.region}:{self.account}:{logical_id}/{attribute}"

    # --------------------------------------------------------------------------- resolution

    def resolve(self, value: Any, where: str) -> Any:  # noqa: PLR0911
        if isinstance(value, list):
            items = [self.resolve(item, f"{where}[{index}]") for index, item in enumerate(value)]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg, where)
            if key == "Fn::GetAtt":
                parts = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.get_att(parts[0], self.resolve(parts[1], where), where)
            if key == "Fn::Sub":
                return self._sub(arg, where)
            if key == "Fn::Join":
                separator, items = arg
                return str(separator).join(str(i) for i in self.resolve(items, where))
            if key == "Fn::If":
                name, when_true, when_false = arg
                chosen = when_true if self.condition(name, where) else when_false
                return self.resolve(chosen, where)
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(items, where)[int(self.resolve(index, where))]
            if key == "Fn::Split":
                separator, text = arg
                return str(self.resolve(text, where)).split(separator)
            if key == "Fn::FindInMap":
                table, first, second = (self.resolve(part, where) for part in arg)
                try:
                    return self.template["Mappings"][table][first][second]
                except KeyError as error:
                    raise ConfigError(f"{where}: Fn::FindInMap has no {error}") from error
            if key.startswith("Fn::") or key == "Condition":
                raise ConfigError(f"{where}: {key} is not supported by the local emulator")
        resolved = {k: self.resolve(v, f"{where}.{k}") for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    _SUB = re.compile(r"\$\{(!?)([^}]+)\}")

    def _sub(self, arg: Any, where: str) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], self.resolve(arg[1], where)
        else:
            text, variables = arg, {}

        def replace(match: re.Match[str]) -> str:
            literal, name = match.groups()
            if literal:
                return "${" + name + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and name.split(".", 1)[0] in self.resources:
                logical, attribute = name.split(".", 1)
                return self.get_att(logical, attribute, where)
            return str(self.ref(name, where))

        return self._SUB.sub(replace, str(text))


def resources_of_type(resolver: Resolver, kind: str) -> dict[str, dict[str, Any]]:
    """Resolved Properties of every enabled resource of one type, by logical id."""
    found: dict[str, dict[str, Any]] = {}
    for logical_id, resource in resolver.resources.items():
        if resource.get("Type") != kind or not resolver.resource_enabled(logical_id):
            continue
        where = f"Resources.{logical_id}.Properties"
        found[logical_id] = resolver.resolve(resource.get("Properties") or {}, where)
    return found
