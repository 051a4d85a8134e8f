"""The Mail Manager resources of a template, validated and cross-checked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mxgate.errors import ConfigError
from mxgate.mailmanager.models import (
    AddressList,
    Archive,
    IngressPoint,
    Relay,
    RuleSet,
    TrafficPolicy,
)
from mxgate.mailmanager.template import Resolver, logical_id_of, read_template, resources_of_type

M = TypeVar("M", bound=BaseModel)

_TYPES: dict[str, tuple[str, type[BaseModel]]] = {
    "ingress_points": ("AWS::SES::MailManagerIngressPoint", IngressPoint),
    "traffic_policies": ("AWS::SES::MailManagerTrafficPolicy", TrafficPolicy),
    "rule_sets": ("AWS::SES::MailManagerRuleSet", RuleSet),
    "relays": ("AWS::SES::MailManagerRelay", Relay),
    "archives": ("AWS::SES::MailManagerArchive", Archive),
    "address_lists": ("AWS::SES::MailManagerAddressList", AddressList),
}


def format_location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _validate(model: type[M], logical_id: str, kind: str, properties: Any) -> M:
    try:
        return model.model_validate(properties)
    except ValidationError as error:
        problems = "; ".join(
            f"{format_location(tuple(e['loc'])) or '(properties)'}: {e['msg']}"
            for e in error.errors()
        )
        raise ConfigError(f"{logical_id} ({kind}): {problems}") from error


@dataclass(frozen=True)
class MailManagerConfig:
    ingress_points: Mapping[str, IngressPoint]
    traffic_policies: Mapping[str, TrafficPolicy]
    rule_sets: Mapping[str, RuleSet]
    relays: Mapping[str, Relay]
    archives: Mapping[str, Archive]
    address_lists: Mapping[str, AddressList]
    resolver: Resolver

    def ingress_point(self, name: str | None = None) -> tuple[str, IngressPoint]:
        """The named ingress point, or the only one the template has."""
        if name is not None:
            if name not in self.ingress_points:
                raise ConfigError(f"no ingress point {name!r} in the template")
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


def _check_references(config: MailManagerConfig) -> None:
    def need(collection: Mapping[str, Any], reference: str, where: str, what: str) -> None:
        if logical_id_of(reference) not in collection:
            raise ConfigError(f"{where}: {what} {reference!r} is not a resource of the template")

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
            for c_index, condition in enumerate(statement.Conditions):
                boolean = condition.BooleanExpression
                if boolean is not None and boolean.Evaluate.IsInAddressList is not None:
                    where = (
                        f"{logical_id}.PolicyStatements[{index}].Conditions[{c_index}]"
                        ".BooleanExpression.Evaluate.IsInAddressList.AddressLists[0]"
                    )
                    need(
                        config.address_lists,
                        boolean.Evaluate.IsInAddressList.AddressLists[0],
                        where,
                        "address list",
                    )
    for logical_id, rule_set in config.rule_sets.items():
        for index, rule in enumerate(rule_set.Rules):
            place = f"{logical_id}.Rules[{index}]" + (f" ({rule.Name})" if rule.Name else "")
            for group in ("Conditions", "Unless"):
                for c_index, condition in enumerate(getattr(rule, group)):
                    boolean = condition.BooleanExpression
                    if boolean is not None and boolean.Evaluate.IsInAddressList is not None:
                        need(
                            config.address_lists,
                            boolean.Evaluate.IsInAddressList.AddressLists[0],
                            f"{place}.{group}[{c_index}]",
                            "address list",
                        )
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


def load_mail_manager(
    template: Path, parameters: Mapping[str, str] | None = None
) -> MailManagerConfig:
    document = read_template(template)
    resolver = Resolver(document, dict(parameters or {}))
    found: dict[str, dict[str, Any]] = {}
    for attribute, (kind, model) in _TYPES.items():
        found[attribute] = {
            logical_id: _validate(model, logical_id, kind, properties)
            for logical_id, properties in resources_of_type(resolver, kind).items()
        }
    config = MailManagerConfig(resolver=resolver, **found)
    _check_references(config)
    return config
