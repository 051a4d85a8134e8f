"""The Mail Manager resources of a template, validated and cross-checked.

Every problem is reported with its place: the resource's logical id, the rule (index and
name) or statement index, and the field, e.g.
`RuleSet.Rules[2] (archive).Actions[0].Archive.TargetArchive: archive 'Archve' is not ...`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from mxgate.config_files import Problem, validation_problems
from mxgate.errors import ConfigError
from mxgate.mailmanager import models
from mxgate.mailmanager.models import (
    AddonInstance,
    AddonSubscription,
    AddressList,
    Archive,
    IngressPoint,
    Relay,
    RuleCondition,
    RuleSet,
    TrafficPolicy,
)
from mxgate.mailmanager.template import (
    FUNCTION_TYPES,
    STACK_NAME,
    Resolver,
    TemplateError,
    logical_id_of,
    read_template,
)

_TYPES: dict[str, tuple[str, type[BaseModel]]] = {
    "ingress_points": ("AWS::SES::MailManagerIngressPoint", IngressPoint),
    "traffic_policies": ("AWS::SES::MailManagerTrafficPolicy", TrafficPolicy),
    "rule_sets": ("AWS::SES::MailManagerRuleSet", RuleSet),
    "relays": ("AWS::SES::MailManagerRelay", Relay),
    "archives": ("AWS::SES::MailManagerArchive", Archive),
    "address_lists": ("AWS::SES::MailManagerAddressList", AddressList),
    "addon_subscriptions": ("AWS::SES::MailManagerAddonSubscription", AddonSubscription),
    "addon_instances": ("AWS::SES::MailManagerAddonInstance", AddonInstance),
}
MAIL_MANAGER_TYPES = frozenset(kind for kind, _ in _TYPES.values())

# Every field name of every model: what an unknown field is compared with for a suggestion.
_FIELD_NAMES = sorted(
    {
        name
        for model in vars(models).values()
        if isinstance(model, type) and issubclass(model, BaseModel)
        for name in model.model_fields
    }
)


class MailManagerError(ConfigError):
    """The template's Mail Manager resources cannot be used; `problems` says why, each placed."""

    def __init__(self, template: Path, problems: list[Problem]) -> None:
        self.template = template
        self.problems = problems
        lines = "".join(f"\n  {problem}" for problem in problems)
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"{template}: {count} in the Mail Manager resources:{lines}")


def validate_properties(
    model: type[BaseModel], logical_id: str, properties: Any
) -> tuple[Any, list[Problem]]:
    try:
        return model.model_validate(properties), []
    except ValidationError as error:
        return None, validation_problems(error, properties, _FIELD_NAMES, root=logical_id)


@dataclass(frozen=True)
class FunctionSource:
    """Where a template's Lambda function lives, for InvokeLambda on one machine."""

    logical_id: str
    name: str
    code_dir: Path | None  # None when CodeUri is not a local directory
    handler: str | None
    runtime: str | None

    @property
    def starts_pipeline(self) -> bool:
        """Whether this is the pipeline's Start function (functions/start/): an InvokeLambda
        to it hands the envelope on to the workflow, which ends the recipients, rather than to
        an application."""
        return self.code_dir is not None and self.code_dir.name == "start"


@dataclass(frozen=True)
class MailManagerResources:
    ingress_points: Mapping[str, IngressPoint]
    traffic_policies: Mapping[str, TrafficPolicy]
    rule_sets: Mapping[str, RuleSet]
    relays: Mapping[str, Relay]
    archives: Mapping[str, Archive]
    address_lists: Mapping[str, AddressList]
    resolver: Resolver
    addon_subscriptions: Mapping[str, AddonSubscription] = field(default_factory=dict)
    addon_instances: Mapping[str, AddonInstance] = field(default_factory=dict)
    template: Path = field(default=Path("template.yaml"))

    def ingress_point(self, name: str | None = None) -> tuple[str, IngressPoint]:
        """The named ingress point, or the only one the template has."""
        if name is not None:
            if name not in self.ingress_points:
                raise ConfigError(
                    f"no ingress point {name!r} in the template "
                    f"(it has {', '.join(sorted(self.ingress_points)) or 'none'})"
                )
            return name, self.ingress_points[name]
        if len(self.ingress_points) != 1:
            names = sorted(self.ingress_points)
            raise ConfigError(f"the template has {len(names)} ingress points {names}: name one")
        return next(iter(self.ingress_points.items()))

    def traffic_policy(self, ingress: IngressPoint) -> TrafficPolicy:
        return self.traffic_policies[logical_id_of(ingress.TrafficPolicyId)]

    def rule_set(self, ingress: IngressPoint) -> RuleSet:
        return self.rule_sets[logical_id_of(ingress.RuleSetId)]

    def relay(self, reference: str) -> tuple[str, Relay]:
        logical = logical_id_of(reference)
        return logical, self.relays[logical]

    def archive_id(self, reference: str) -> str:
        return logical_id_of(reference)

    def address_list_id(self, reference: str) -> str:
        """A list's logical id, from its logical id, its ARN or its AddressListName."""
        logical = logical_id_of(reference)
        if logical in self.address_lists:
            return logical
        for list_id, address_list in self.address_lists.items():
            if address_list.AddressListName == reference:
                return list_id
        known = ", ".join(sorted(self.address_lists)) or "none"
        raise ConfigError(f"no address list {reference!r} in the template (it has {known})")

    def lists_filled_with(self, members: str) -> list[str]:
        """The address lists whose template Metadata says who fills them
        (`MxgateMembers: directory`: the routes file's directory, routing/recipients.py)."""
        return sorted(
            list_id
            for list_id in self.address_lists
            if ((self.resolver.resources.get(list_id) or {}).get("Metadata") or {}).get(
                "MxgateMembers"
            )
            == members
        )

    def function(self, reference: str) -> FunctionSource | None:
        """The template's Lambda function an InvokeLambda FunctionArn names, if any."""
        return self._functions.get(function_name_of(reference))

    @cached_property
    def _functions(self) -> dict[str, FunctionSource]:
        """Each Lambda function of the template by its logical id and by its name, found once
        (an InvokeLambda looks its function up three times a message)."""
        resources = self.resolver.resources
        defaults = (self.resolver.template.get("Globals") or {}).get("Function") or {}
        found: dict[str, FunctionSource] = {}
        for logical_id, resource in resources.items():
            if resource.get("Type") not in FUNCTION_TYPES:
                continue
            properties = resource.get("Properties") or {}

            def setting(key: str, properties: Any = properties) -> Any:
                return properties.get(key, defaults.get(key))

            code_uri = setting("CodeUri")
            for name in (logical_id, self.resolver.ref(logical_id, logical_id)):
                found.setdefault(
                    name,
                    FunctionSource(
                        logical_id=logical_id,
                        name=name,
                        code_dir=self.template.parent / code_uri
                        if isinstance(code_uri, str)
                        else None,
                        handler=setting("Handler"),
                        runtime=setting("Runtime"),
                    ),
                )
        return found


def function_name_of(reference: str) -> str:
    """`arn:aws:lambda:r:a:function:NAME[:qualifier]`, `NAME[:qualifier]` -> NAME."""
    parts = reference.split(":")
    if reference.startswith("arn:") and len(parts) >= 7:
        return parts[6]
    return parts[0]


def _address_list_references(
    place: str, conditions: list[RuleCondition] | list[Any]
) -> list[tuple[str, str]]:
    found = []
    for index, condition in enumerate(conditions):
        boolean = condition.BooleanExpression
        if boolean is not None and boolean.Evaluate.IsInAddressList is not None:
            found.append(
                (
                    f"{place}[{index}].BooleanExpression.Evaluate.IsInAddressList.AddressLists[0]",
                    boolean.Evaluate.IsInAddressList.AddressLists[0],
                )
            )
    return found


def reference_problems(config: MailManagerResources) -> list[Problem]:
    """References between resources that name nothing of the right type in the template."""
    problems: list[Problem] = []

    def need(collection: Mapping[str, Any], reference: str, place: str, what: str) -> None:
        if logical_id_of(reference) not in collection:
            known = ", ".join(sorted(collection)) or "none"
            problems.append(
                Problem(
                    place,
                    f"{what} {reference!r} is not a resource of the template "
                    f"(its {what}s: {known})",
                )
            )

    for logical_id, point in config.ingress_points.items():
        need(config.rule_sets, point.RuleSetId, f"{logical_id}.RuleSetId", "rule set")
        need(
            config.traffic_policies,
            point.TrafficPolicyId,
            f"{logical_id}.TrafficPolicyId",
            "traffic policy",
        )
    for logical_id, policy in config.traffic_policies.items():
        for index, statement in enumerate(policy.PolicyStatements):
            place = f"{logical_id}.PolicyStatements[{index}].Conditions"
            for where, reference in _address_list_references(place, statement.Conditions):
                need(config.address_lists, reference, where, "address list")
    for logical_id, rule_set in config.rule_sets.items():
        for index, rule in enumerate(rule_set.Rules):
            place = f"{logical_id}.Rules[{index}]" + (f" ({rule.Name})" if rule.Name else "")
            for group in ("Conditions", "Unless"):
                for where, reference in _address_list_references(
                    f"{place}.{group}", getattr(rule, group)
                ):
                    need(config.address_lists, reference, where, "address list")
            for a_index, action in enumerate(rule.Actions):
                where = f"{place}.Actions[{a_index}].{action.kind}"
                if action.Relay is not None:
                    need(config.relays, action.Relay.Relay, f"{where}.Relay", "relay")
                if action.Archive is not None:
                    need(
                        config.archives,
                        action.Archive.TargetArchive,
                        f"{where}.TargetArchive",
                        "archive",
                    )
                if action.InvokeLambda is not None:
                    reference = action.InvokeLambda.FunctionArn
                    if config.function(reference) is None:
                        problems.append(
                            Problem(
                                f"{where}.FunctionArn",
                                f"function {reference!r} is not a Lambda function of the template",
                            )
                        )
    return problems


def check_mail_manager(
    template: Path,
    parameters: Mapping[str, str] | None = None,
    condition_values: Mapping[str, bool] | None = None,
    stack: str = STACK_NAME,
) -> tuple[MailManagerResources | None, list[Problem]]:
    """Load and cross-check the Mail Manager resources; every problem found, not just the first.
    `stack` is what AWS::StackName resolves to (a deployed stack's name for --aws)."""
    document = read_template(template)
    resolver = Resolver(
        document, dict(parameters or {}), stack=stack, condition_values=condition_values or {}
    )
    problems: list[Problem] = []
    found: dict[str, dict[str, Any]] = {attribute: {} for attribute in _TYPES}
    kinds = {kind: (attribute, model) for attribute, (kind, model) in _TYPES.items()}
    for logical_id, resource in resolver.resources.items():
        if not isinstance(resource, dict) or resource.get("Type") not in kinds:
            continue
        attribute, model = kinds[resource["Type"]]
        try:
            if not resolver.resource_enabled(logical_id):
                continue
            properties = resolver.resolve(resource.get("Properties") or {}, logical_id)
        except TemplateError as error:
            problems.append(Problem(error.where, error.reason))
            continue
        value, invalid = validate_properties(model, logical_id, properties)
        problems += invalid
        if value is not None:
            found[attribute][logical_id] = value
    config = MailManagerResources(resolver=resolver, template=template, **found)
    if problems:  # references into resources that failed to load would only add noise
        return None, problems
    problems = reference_problems(config)
    return (None if problems else config), problems


def load_mail_manager(
    template: Path, parameters: Mapping[str, str] | None = None, stack: str = STACK_NAME
) -> MailManagerResources:
    config, problems = check_mail_manager(template, parameters, stack=stack)
    if config is None:
        raise MailManagerError(template, problems)
    return config


def accepted_domains(config: MailManagerResources) -> dict[str, str]:
    """The recipient domains the MX's traffic policies (those of OPEN ingress points) let in,
    each with the statement that does (ALLOW statements on RECIPIENT with ENDS_WITH `@domain`
    or EQUALS `user@domain`). The relay ingress point's policy lets in our own mail going out."""
    found: dict[str, str] = {}
    open_policies = {
        logical_id_of(point.TrafficPolicyId)
        for point in config.ingress_points.values()
        if point.Type == "OPEN"
    }
    for policy_id, policy in config.traffic_policies.items():
        if policy_id not in open_policies:
            continue
        for index, statement in enumerate(policy.PolicyStatements):
            if statement.Action != "ALLOW":
                continue
            for condition in statement.Conditions:
                expression = condition.StringExpression
                if expression is None or expression.Evaluate.Attribute != "RECIPIENT":
                    continue
                for value in expression.Values:
                    domain = ""
                    if expression.Operator == "ENDS_WITH" and value.startswith("@"):
                        domain = value[1:]
                    elif expression.Operator == "EQUALS" and "@" in value:
                        domain = value.rpartition("@")[2]
                    if domain:
                        where = f"{policy_id}.PolicyStatements[{index}] (ALLOW)"
                        found.setdefault(domain.casefold(), where)
    return found
