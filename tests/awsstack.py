"""The repository's stack in moto for the tests (mxgate.sandbox.stack), with the canonical
payloads of events/ and DNS on a loopback server that knows no names."""

from __future__ import annotations

import json
from typing import Any

from mxgate.sandbox.stack import Stack
from tests.support import REPO, quiet_dns

TEMPLATE = REPO / "template.yaml"
SAMCONFIG = REPO / "samconfig.toml"
EVENTS = REPO / "events"


def canonical_event(name: str) -> Any:
    """One of the canonical payloads in events/ (`events/<name>.json`)."""
    return json.loads((EVENTS / f"{name}.json").read_text())


def create_stack() -> Stack:
    """template.yaml's stack in the active moto mock; the functions never ask the system's
    resolver."""
    return Stack.create(
        TEMPLATE,
        SAMCONFIG,
        environment={"MXGATE_DNS_SERVER": f"127.0.0.1:{quiet_dns().port}"},
    )
