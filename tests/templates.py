"""Test templates: the repository's own template with Mail Manager resources swapped in, so a
gateway under test runs the real pipeline with the rules a test needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mxgate.mailmanager.template import read_template
from tests.support import REPO, TEMPLATE


def gateway_template(
    directory: Path,
    resources: dict[str, Any | None] | None = None,
    parameters: dict[str, Any] | None = None,
) -> Path:
    """template.yaml with `resources` replacing (None: removing) resources of the same name and
    `parameters` added; relative paths made absolute so the file may live anywhere."""
    document = read_template(TEMPLATE)
    for name, resource in (document["Resources"]).items():
        properties = resource.get("Properties") or {}
        for key in ("DefinitionUri", "CodeUri", "ContentUri"):
            if isinstance(properties.get(key), str):
                properties[key] = str(REPO / properties[key])
        document["Resources"][name] = resource
    for name, resource in (resources or {}).items():
        if resource is None:
            document["Resources"].pop(name, None)
        else:
            document["Resources"][name] = resource
    document["Parameters"].update(parameters or {})
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "template.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def rule_set(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"Type": "AWS::SES::MailManagerRuleSet", "Properties": {"Rules": list(rules)}}


def traffic_policy(
    default: str, *statements: dict[str, Any], max_size: int | None = None
) -> dict[str, Any]:
    properties: dict[str, Any] = {"DefaultAction": default, "PolicyStatements": list(statements)}
    if max_size is not None:
        properties["MaxMessageSizeBytes"] = max_size
    return {"Type": "AWS::SES::MailManagerTrafficPolicy", "Properties": properties}


def recipient_is(*addresses: str) -> dict[str, Any]:
    return {
        "StringExpression": {
            "Evaluate": {"Attribute": "RECIPIENT"},
            "Operator": "EQUALS",
            "Values": list(addresses),
        }
    }
