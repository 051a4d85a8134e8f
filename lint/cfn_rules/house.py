"""House policy for template.yaml, as cfn-lint rules (`make validate` appends this directory).

cfn-lint hands these rules the template as written, so SAM's own types are checked alongside
the plain CloudFormation ones.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cfnlint.rules import CloudFormationLintRule, RuleMatch
from cfnlint.template import Template

FUNCTIONS = ["AWS::Lambda::Function", "AWS::Serverless::Function"]
STATE_MACHINES = {
    "AWS::StepFunctions::StateMachine": "LoggingConfiguration",
    "AWS::Serverless::StateMachine": "Logging",
}
SAM_EVENT_RULES = {"EventBridgeRule", "Schedule", "CloudWatchEvent"}
SOURCE = "lint/cfn_rules/house.py"  # in this repository


def _target(value: Any) -> str | None:
    """The logical id a `Ref` or `Fn::GetAtt` points at, if that is what `value` is."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref" and isinstance(arg, str):
            return arg
        if key == "Fn::GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else arg
            return str(parts[0])
    return None


def _properties(resource: Any) -> dict[str, Any]:
    properties = resource.get("Properties") if isinstance(resource, dict) else None
    return properties if isinstance(properties, dict) else {}


def _log_groups(cfn: Template) -> dict[str, dict[str, Any]]:
    return {
        name: _properties(resource)
        for name, resource in cfn.get_resources(["AWS::Logs::LogGroup"]).items()
    }


class FunctionLogRetention(CloudFormationLintRule):
    """Without a log group of its own, a function's logs are kept forever (and billed)."""

    id = "E9001"
    shortdesc = "Every function has a log group with retention"
    description = (
        "Each function needs an AWS::Logs::LogGroup with RetentionInDays, named "
        "/aws/lambda/${Function} or chosen by the function's LoggingConfig.LogGroup"
    )
    source_url = SOURCE
    tags: ClassVar[list[str]] = ["house", "logs"]

    def match(self, cfn: Template) -> list[RuleMatch]:
        groups = _log_groups(cfn)
        by_function: dict[str, dict[str, Any]] = {}
        for properties in groups.values():
            name = properties.get("LogGroupName")
            text = name.get("Fn::Sub") if isinstance(name, dict) else None
            if isinstance(text, str) and text.startswith("/aws/lambda/${") and text.endswith("}"):
                by_function[text[len("/aws/lambda/${") : -1]] = properties
        matches = []
        for function, resource in cfn.get_resources(FUNCTIONS).items():
            chosen = _target((_properties(resource).get("LoggingConfig") or {}).get("LogGroup"))
            group = groups.get(chosen) if chosen else by_function.get(function)
            if group is None:
                message = f"{function} has no log group of its own (/aws/lambda/${{{function}}})"
            elif "RetentionInDays" not in group:
                message = f"the log group of {function} sets no RetentionInDays"
            else:
                continue
            matches.append(RuleMatch(["Resources", function], message))
        return matches


class StateMachineLogRetention(CloudFormationLintRule):
    id = "E9002"
    shortdesc = "Every state machine logs to a log group with retention"
    description = (
        "Each state machine logs (a level other than OFF) to a log group of this template "
        "that sets RetentionInDays"
    )
    source_url = SOURCE
    tags: ClassVar[list[str]] = ["house", "logs"]

    def match(self, cfn: Template) -> list[RuleMatch]:
        groups = _log_groups(cfn)
        matches = []
        for machine, resource in cfn.get_resources(list(STATE_MACHINES)).items():
            key = STATE_MACHINES[resource["Type"]]
            logging = _properties(resource).get(key) or {}
            path = ["Resources", machine, "Properties", key]
            targets = [
                _target((d.get("CloudWatchLogsLogGroup") or {}).get("LogGroupArn"))
                for d in logging.get("Destinations") or []
            ]
            if logging.get("Level", "OFF") == "OFF" or not targets:
                matches.append(RuleMatch(path, f"{machine} does not log to a log group"))
            matches += [
                RuleMatch(path, f"{machine} logs to {target}, which sets no RetentionInDays")
                for target in targets
                if target not in groups or "RetentionInDays" not in groups[target]
            ]
        return matches


class RuleTargetDeadLetters(CloudFormationLintRule):
    """EventBridge drops an event it cannot hand to its target after a day, unless it is kept."""

    id = "E9003"
    shortdesc = "Every EventBridge rule target has a dead-letter queue"
    description = (
        "Each target of an AWS::Events::Rule, and each EventBridge event of a SAM function or "
        "state machine, sets DeadLetterConfig"
    )
    source_url = SOURCE
    tags: ClassVar[list[str]] = ["house", "events"]

    def match(self, cfn: Template) -> list[RuleMatch]:
        matches = []
        for rule, resource in cfn.get_resources(["AWS::Events::Rule"]).items():
            for index, target in enumerate(_properties(resource).get("Targets") or []):
                if not (target.get("DeadLetterConfig") or {}).get("Arn"):
                    path = ["Resources", rule, "Properties", "Targets", index]
                    matches.append(
                        RuleMatch(path, f"{rule} target {index} has no dead-letter queue")
                    )
        sam_types = ["AWS::Serverless::Function", "AWS::Serverless::StateMachine"]
        for name, resource in cfn.get_resources(sam_types).items():
            for event_name, event in (_properties(resource).get("Events") or {}).items():
                if event.get("Type") in SAM_EVENT_RULES and not _properties(event).get(
                    "DeadLetterConfig"
                ):
                    path = ["Resources", name, "Properties", "Events", event_name]
                    matches.append(
                        RuleMatch(path, f"{name} event {event_name} has no dead-letter queue")
                    )
        return matches
