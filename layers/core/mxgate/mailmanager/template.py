"""Read a CloudFormation / SAM template and resolve its intrinsic functions locally.

Only what a template's Mail Manager resources need is resolved: Ref, Fn::GetAtt, Fn::Sub,
Fn::Join, Fn::If (with Conditions), Fn::Select, Fn::Split, Fn::FindInMap and the pseudo
parameters. References to resources resolve to stable local identifiers: a resource's
logical id for Ref, and an ARN that ends in the logical id for ARN attributes, so the
emulator can find the resource a rule names whichever form the template uses.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mxgate.config_files import read_yaml, safe_loader
from mxgate.errors import ConfigError

NO_VALUE = object()
FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
LOCAL_REGION = "us-east-1"
LOCAL_ACCOUNT = "000000000000"
STACK_NAME = "mxgate"
LOOPBACK = "127.0.0.1"

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


class TemplateError(ConfigError):
    """An intrinsic function that cannot be resolved, with the place it was found."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class _CfnLoader(safe_loader()):  # type: ignore[misc]
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


def read_parameter_file(path: Path) -> dict[str, object]:
    """Parameter values from a file: samconfig.toml, a YAML/JSON mapping (or a file with
    `parameters:`), or a CloudFormation parameters list."""
    if path.suffix == ".toml":
        return dict(read_samconfig_parameters(path))
    document = read_yaml(path, "parameters")  # JSON is YAML too
    if isinstance(document, list):  # [{"ParameterKey": ..., "ParameterValue": ...}]
        try:
            return {item["ParameterKey"]: item["ParameterValue"] for item in document}
        except (KeyError, TypeError):
            raise ConfigError(f"{path}: a list must hold ParameterKey/ParameterValue") from None
    if isinstance(document, dict) and isinstance(document.get("parameters"), dict):
        document = document["parameters"]
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of parameter names to values")
    return dict(document)


def parameter_text(value: object) -> str:
    """A parameter value as CloudFormation sees it: YAML `true` is the string "true"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parameter_problem(name: str, value: str, spec: Any) -> str | None:
    if not isinstance(spec, dict):
        return None
    allowed = spec.get("AllowedValues")
    if allowed and value not in [parameter_text(v) for v in allowed]:
        return f"parameter {name}={value!r} is not one of {allowed}"
    if spec.get("Type") == "Number":
        try:
            float(value)
        except ValueError:
            return f"parameter {name}={value!r} is not a number"
    pattern = spec.get("AllowedPattern")
    if pattern and re.fullmatch(str(pattern), value) is None:
        return f"parameter {name}={value!r} does not match its AllowedPattern {pattern!r}"
    return None


def parameter_values(
    document: Mapping[str, Any], sources: Sequence[tuple[str, Mapping[str, object]]]
) -> dict[str, str]:
    """Parameter values from several sources (later ones win), each checked against the
    template's declaration; an error names the source that gave the bad value."""
    declared = document.get("Parameters") or {}
    values: dict[str, str] = {}
    for source, given in sources:
        for name, raw in given.items():
            if name not in declared:
                raise ConfigError(
                    f"{source}: parameter {name!r} is not declared by the template "
                    f"(declared: {', '.join(sorted(declared))})"
                )
            value = parameter_text(raw)
            problem = _parameter_problem(name, value, declared[name])
            if problem is not None:
                raise ConfigError(f"{source}: {problem}")
            values[name] = value
    return values


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
    "AWS::SES::MailManagerAddonSubscription": {
        "AddonSubscriptionArn": "mailmanager-addon-subscription",
        "AddonSubscriptionId": None,
    },
    "AWS::SES::MailManagerAddonInstance": {
        "AddonInstanceArn": "mailmanager-addon-instance",
        "AddonInstanceId": None,
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
    condition_values: Mapping[str, bool] = field(default_factory=dict)  # forced (rules check)

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
            problem = _parameter_problem(name, parameter_text(raw), spec)
            if problem is not None:
                raise ConfigError(problem)
            kind = spec.get("Type", "String") if isinstance(spec, dict) else "String"
            self.values[name] = (
                [part.strip() for part in parameter_text(raw).split(",")]
                if kind == "CommaDelimitedList"
                else parameter_text(raw)
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
        self._conditions: dict[str, bool] = dict(self.condition_values)

    # --------------------------------------------------------------------------- conditions

    def condition(self, name: str, where: str = "Conditions") -> bool:
        if name not in self._conditions:
            spec = (self.template.get("Conditions") or {}).get(name)
            if spec is None:
                raise TemplateError(where, f"unknown condition {name!r}")
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
            kind = self.resources[name].get("Type")
            if kind == "AWS::S3::Bucket":
                return self.physical_name(name, "BucketName", f"{self.stack}-{name.lower()}")
            if kind == "AWS::SNS::Topic":
                topic = self.physical_name(name, "TopicName")
                return f"arn:aws:sns:{self.region}:{self.account}:{topic}"
            if kind == "AWS::SecretsManager::Secret":
                secret = self.physical_name(name, "Name")
                return f"arn:aws:secretsmanager:{self.region}:{self.account}:secret:{secret}"
            if kind in FUNCTION_TYPES:
                return self.physical_name(name, "FunctionName")
            return name
        raise TemplateError(where, f"Ref to unknown parameter or resource {name!r}")

    def physical_name(self, logical_id: str, prop: str, default: str | None = None) -> str:
        """A resource's name property when the template sets it, else a stable local name."""
        value = (self.resources[logical_id].get("Properties") or {}).get(prop)
        if value is None:
            return default or logical_id
        return str(self.resolve(value, f"Resources.{logical_id}.Properties.{prop}"))

    def get_att(self, logical_id: str, attribute: str, where: str) -> str:
        resource = self.resources.get(logical_id)
        if resource is None:
            raise TemplateError(where, f"Fn::GetAtt of unknown resource {logical_id!r}")
        kind = resource.get("Type", "")
        known = _ARN_ATTRIBUTES.get(kind)
        if known is not None:
            if attribute not in known:
                raise TemplateError(where, f"{kind} has no attribute {attribute!r}")
            suffix = known[attribute]
            if suffix is None:
                return logical_id
            if suffix == "localhost":
                return "localhost"
            return f"arn:aws:ses:{self.region}:{self.account}:{suffix}/{logical_id}"
        if kind == "AWS::S3::Bucket" and attribute == "Arn":
            return f"arn:aws:s3:::{self.ref(logical_id, where)}"
        if kind in FUNCTION_TYPES and attribute == "Arn":
            return f"arn:aws:lambda:{self.region}:{self.account}:function:{self.ref(logical_id, where)}"
        if kind == "AWS::IAM::Role" and attribute == "Arn":
            role = self.physical_name(logical_id, "RoleName")
            return f"arn:aws:iam::{self.account}:role/{role}"
        if kind == "AWS::EC2::EIP" and attribute == "PublicIp":
            return LOOPBACK  # on this machine every connection comes from loopback
        if kind == "AWS::SNS::Topic" and attribute == "TopicArn":
            return str(self.ref(logical_id, where))
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
                    raise TemplateError(where, f"Fn::FindInMap has no {error}") from error
            if key.startswith("Fn::") or key == "Condition":
                raise TemplateError(where, f"{key} is not supported by the local emulator")
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


ROUTES_PARAMETERS = "MXGATE_ROUTES_PARAMETERS"  # the functions' variable naming them


def routes_parameters(resolver: Resolver) -> dict[str, str]:
    """The values the routes file's `${Name}` placeholders take: the JSON object the template
    builds from its parameters for the functions (`MXGATE_ROUTES_PARAMETERS`, derived
    defaults included), resolved as CloudFormation resolves it; {} if it builds none."""
    function_globals = (resolver.template.get("Globals") or {}).get("Function") or {}
    variables = (function_globals.get("Environment") or {}).get("Variables") or {}
    if ROUTES_PARAMETERS not in variables:
        return {}
    where = f"Globals.Function.Environment.Variables.{ROUTES_PARAMETERS}"
    text = resolver.resolve(variables[ROUTES_PARAMETERS], where)
    try:
        values = json.loads(str(text))
    except ValueError as error:
        raise TemplateError(where, f"not a JSON object: {error}") from error
    if not isinstance(values, dict):
        raise TemplateError(where, "not a JSON object")
    return {str(name): str(value) for name, value in values.items()}
