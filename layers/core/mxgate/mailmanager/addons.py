"""Mail Manager's email add-ons, as conditions see them. Pure: no I/O.

A condition's `Analysis` names an add-on instance (`Analyzer`, its ARN or id) and one of its
results (`ResultField`). On one machine an instance of the template can be bound to a DNS
blocklist (`addons:` in config/local.yaml); the ingress asks it once per SMTP session and the
traffic policy compares its results. What the real add-ons call their result fields is their
vendors' (AWS does not document them for templates): the local DNSBL add-on answers two,
named `addon.listed` and `addon.listings` unless the local configuration renames them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from mxgate.mailmanager.models import AddonAnalysis, PolicyCondition, TrafficPolicy
from mxgate.mailmanager.template import logical_id_of

LISTED = "addon.listed"  # a BooleanExpression: the sender's IP is on the list
LISTINGS = "addon.listings"  # a StringExpression: the names of the entries found (or codes)

ResultValue = bool | tuple[str, ...]
EXPRESSION = {bool: "BooleanExpression", tuple: "StringExpression"}  # what compares a value


@dataclass(frozen=True, slots=True)
class AddonResult:
    """What one add-on instance found for one SMTP session."""

    analyzer: str  # the add-on instance's logical id
    fields: Mapping[str, ResultValue]  # ResultField -> its value
    flagged: bool = False  # the add-on found something against the sender (listed)
    failure: str = ""  # the analysis failed: why (the fields then say "nothing found")
    summary: str = ""  # one line: what was asked and what the answer means

    @property
    def failed(self) -> bool:
        return bool(self.failure)


def analyzer_id(analysis: AddonAnalysis) -> str:
    """The add-on instance an Analysis names: its logical id in the template."""
    return logical_id_of(analysis.Analyzer)


def _result(
    analysis: AddonAnalysis, results: Mapping[str, AddonResult]
) -> tuple[AddonResult | None, str]:
    name = analyzer_id(analysis)
    found = results.get(name)
    if found is None:
        return None, f"add-on {name} gave no result here: no match"
    return found, f"{name} {analysis.ResultField} ({found.summary})"


def addon_boolean(
    analysis: AddonAnalysis, results: Mapping[str, AddonResult]
) -> tuple[bool | None, str]:
    """The boolean result an Analysis names (None: not known), and how it reads."""
    found, shown = _result(analysis, results)
    if found is None:
        return None, shown
    value = found.fields.get(analysis.ResultField)
    if not isinstance(value, bool):
        return None, f"{shown}: no boolean result of that name: no match"
    return value, f"{shown} is {value}"


def addon_strings(
    analysis: AddonAnalysis, results: Mapping[str, AddonResult]
) -> tuple[list[str] | None, str]:
    """The string results an Analysis names (None: not known), and how they read."""
    found, shown = _result(analysis, results)
    if found is None:
        return None, shown
    value = found.fields.get(analysis.ResultField)
    if not isinstance(value, tuple):
        return None, f"{shown}: no string result of that name: no match"
    return list(value), f"{shown} {list(value)}"


def _analyses(condition: PolicyCondition) -> Iterator[tuple[str, AddonAnalysis]]:
    if condition.StringExpression is not None and condition.StringExpression.Evaluate.Analysis:
        yield "StringExpression", condition.StringExpression.Evaluate.Analysis
    if condition.BooleanExpression is not None and condition.BooleanExpression.Evaluate.Analysis:
        yield "BooleanExpression", condition.BooleanExpression.Evaluate.Analysis


@dataclass(frozen=True, slots=True)
class AnalysisUse:
    """One place a traffic policy asks an add-on."""

    place: str  # e.g. PolicyStatements[0].Conditions[1].BooleanExpression.Evaluate.Analysis
    expression: str  # BooleanExpression or StringExpression
    analysis: AddonAnalysis

    @property
    def analyzer(self) -> str:
        return analyzer_id(self.analysis)


def policy_analyses(policy: TrafficPolicy) -> list[AnalysisUse]:
    """Every add-on condition of a traffic policy, with its place."""
    return [
        AnalysisUse(
            f"PolicyStatements[{s}].Conditions[{c}].{expression}.Evaluate.Analysis",
            expression,
            analysis,
        )
        for s, statement in enumerate(policy.PolicyStatements)
        for c, condition in enumerate(statement.Conditions)
        for expression, analysis in _analyses(condition)
    ]


def statement_analyzers(policy: TrafficPolicy, index: int) -> set[str]:
    """The add-on instances one statement asks."""
    prefix = f"PolicyStatements[{index}]."
    return {use.analyzer for use in policy_analyses(policy) if use.place.startswith(prefix)}


def result_field_problems(use: AnalysisUse, fields: Mapping[str, str]) -> list[tuple[str, str]]:
    """(place, why) when an add-on condition asks for a result its add-on does not give;
    `fields` maps the add-on's ResultFields to the expression that compares each."""
    if fields.get(use.analysis.ResultField) == use.expression:
        return []
    known = ", ".join(f"{name} ({expression})" for name, expression in fields.items())
    why = (
        f"{use.analysis.ResultField!r} in a {use.expression} is not a result of add-on "
        f"{use.analyzer} (its results: {known})"
    )
    return [(f"{use.place}.ResultField", why)]
