"""The Hooks port on both runtimes: a hook is looked up in the routes file; one with a URL is
POSTed, signed, with the event; one whose only target is the other runtime's is skipped and
says so; an unknown hook is a permanent error."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mxgate.adapters.aws.clients import LazyClient
from mxgate.adapters.aws.hooks import LambdaHooks
from mxgate.adapters.local.hooks import LocalHooks
from mxgate.errors import PermanentError
from mxgate.routing.routes import Hook

EVENT = {"message_id": "01HOOK", "hook": "audit"}


@dataclass
class Poster:
    """The Webhooks port, recording what it was asked to POST."""

    posted: list[tuple[str, str, str, bytes]] = field(default_factory=list)

    def post(self, url: str, secret: str, event_id: str, body: bytes, timeout: float) -> str:
        self.posted.append((url, secret, event_id, body))
        return f"{url}: 200"


HOOKS = {
    "web": Hook(url="https://hooks.example/audit", secret_env="AUDIT_KEY"),
    "local-only": Hook(command=["true"]),
    "aws-only": Hook(function="arn:aws:lambda:us-east-1:123456789012:function:audit"),
}


@pytest.fixture(params=["local", "aws"])
def runner(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Any, Poster, str]:
    poster = Poster()
    if request.param == "aws":
        return (
            LambdaHooks(LazyClient("lambda", region="us-east-1"), HOOKS, poster),
            poster,
            "local-only",
        )
    return LocalHooks(HOOKS, poster, tmp_path), poster, "aws-only"


def test_a_url_hook_is_posted_with_the_event(runner):
    hooks, poster, _ = runner
    assert hooks.call("web", "01HOOK.web.0", EVENT) == "https://hooks.example/audit: 200"
    ((url, secret, event_id, body),) = poster.posted
    assert (url, secret, event_id) == ("https://hooks.example/audit", "AUDIT_KEY", "01HOOK.web.0")
    assert json.loads(body) == EVENT


def test_a_hook_for_the_other_runtime_only_is_skipped_and_says_so(runner):
    hooks, poster, elsewhere = runner
    assert hooks.call(elsewhere, "01HOOK.x.0", EVENT).startswith("skipped: this hook only has ")
    assert poster.posted == []


def test_an_unknown_hook_is_a_permanent_error(runner):
    hooks, _, _ = runner
    with pytest.raises(PermanentError, match="no hook 'gone'"):
        hooks.call("gone", "01HOOK.gone.0", EVENT)
