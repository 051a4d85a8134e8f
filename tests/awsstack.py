"""The repository's stack in moto for the tests (mxgate.sandbox.stack), with the canonical
payloads of events/ and DNS on a loopback server that knows no names."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from moto import mock_aws

from mxgate.sandbox.stack import MOTO_CONFIG, REGION, Stack
from tests.support import REPO, quiet_dns, ses_routes_document

TEMPLATE = REPO / "template.yaml"
SAMCONFIG = REPO / "samconfig.toml"
EVENTS = REPO / "events"


def fake_credentials(patch: pytest.MonkeyPatch) -> None:
    """Credentials and a region no real AWS account answers to (moto, botocore's Stubber)."""
    patch.setenv("AWS_DEFAULT_REGION", REGION)
    patch.setenv("AWS_ACCESS_KEY_ID", "testing")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@contextlib.contextmanager
def moto_account() -> Iterator[None]:
    """One moto account for a while (a module's tests): credentials, region, and Step
    Functions that executes (MOTO_CONFIG), outside any test's monkeypatch."""
    with pytest.MonkeyPatch.context() as patch:
        fake_credentials(patch)
        with mock_aws(config=MOTO_CONFIG):
            yield


def canonical_event(name: str) -> Any:
    """One of the canonical payloads in events/ (`events/<name>.json`)."""
    return json.loads((EVENTS / f"{name}.json").read_text())


@cache
def ses_routes() -> Path:
    """config/routes.yaml with Workspace and 365 delivered through SES sending."""
    document = ses_routes_document()
    path = Path(tempfile.mkdtemp(prefix="mxgate-routes-")) / "routes.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def create_stack(*, ses: bool = True) -> Stack:
    """template.yaml's stack in the active moto mock; the functions never ask the system's
    resolver. `ses`: Workspace and 365 through SES sending (the tests of that transport)."""
    environment = {"MXGATE_DNS_SERVER": f"127.0.0.1:{quiet_dns().port}"}
    if ses:
        environment["MXGATE_ROUTES_FILE"] = str(ses_routes())
    return Stack.create(TEMPLATE, SAMCONFIG, environment=environment)
