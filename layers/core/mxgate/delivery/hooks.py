"""Post-ingress hooks, what both runtimes share: the hook is looked up in the routes file and
run by this runtime's own kind of target (a command on one machine, a Lambda function on
AWS), or else POSTed, signed, to its URL."""

from __future__ import annotations

import json
from collections.abc import Mapping

from mxgate.errors import PermanentError
from mxgate.ports import Webhooks
from mxgate.routing.routes import Hook


class HookRunner:
    """The Hooks port; a runtime says how it runs its own targets in `run_here`."""

    elsewhere = "a target for the other runtime"  # what a hook skipped here has instead

    def __init__(self, hooks: Mapping[str, Hook], poster: Webhooks) -> None:
        self.hooks = hooks
        self.poster = poster

    def call(self, hook: str, event_id: str, event: Mapping[str, object]) -> str:
        spec = self.hooks.get(hook)
        if spec is None:
            raise PermanentError(f"no hook {hook!r} in the routes file")
        body = json.dumps(event, ensure_ascii=False).encode()
        answer = self.run_here(hook, spec, event_id, body)
        if answer is not None:
            return answer
        if spec.url is not None and spec.secret_env is not None:
            return self.poster.post(spec.url, spec.secret_env, event_id, body, spec.timeout)
        return f"skipped: this hook only has {self.elsewhere}"

    def run_here(self, hook: str, spec: Hook, event_id: str, body: bytes) -> str | None:
        """Run the hook's target of this runtime; None when it has none."""
        raise NotImplementedError
