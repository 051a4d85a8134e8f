"""InvokeLambda on one machine: the template's function handler, imported and called
in-process with the event Lambda would give it.

One function is the AWS runtime's own and has a local counterpart instead: the Start function
(functions/start/), which on AWS joins the WriteToS3 object with the envelope of this event.
Here the emulator starts the workflow from the object it stored, with the envelope of its
recipients, so the event is taken and answered without a second start.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from mxgate.errors import PermanentError
from mxgate.mailmanager.resources import FunctionSource, MailManagerResources
from mxgate.mailmanager.template import LOCAL_ACCOUNT, LOCAL_REGION

Handler = Callable[[Any, Any], Any]
TIMEOUT_MS = 60_000


@dataclass
class LambdaContext:
    """The attributes of the Lambda context object that handlers (and powertools) read."""

    function_name: str
    invoked_function_arn: str
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    log_group_name: str = ""
    log_stream_name: str = "local"
    _deadline: float = field(default_factory=lambda: time.monotonic() + TIMEOUT_MS / 1000)

    def __post_init__(self) -> None:
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


Event = Callable[[], Mapping[str, Any]]  # builds the event, when a handler reads one
LocalHandler = Callable[[Event, Any], Any]


def _joined_locally(event: Event, context: Any) -> dict[str, Any]:
    """The Start function's local counterpart (see the module's notes). It reads no event, so
    none is built: its header fields' parse cost about a tenth of a worker's time a message."""
    return {
        "result": "joined locally: the workflow starts from the stored object and the "
        "envelope of its recipients",
    }


def _given_the_event(handler: Handler) -> LocalHandler:
    return lambda event, context: handler(event(), context)


# functions/<name>/ -> the handler that stands in for it on this machine
LOCAL_COUNTERPARTS: dict[str, LocalHandler] = {"start": _joined_locally}


class LocalLambdas:
    """The Functions port on one machine: finds a function of the template by its ARN or name
    and runs its handler in this process."""

    def __init__(self, resources: MailManagerResources) -> None:
        self.resources = resources
        self._handlers: dict[str, LocalHandler] = {}

    def handler(self, function_arn: str) -> tuple[FunctionSource, LocalHandler]:
        source = self.resources.function(function_arn)
        if source is None:
            raise PermanentError(f"no Lambda function {function_arn!r} in the template")
        if source.logical_id not in self._handlers:
            counterpart = LOCAL_COUNTERPARTS.get(source.code_dir.name if source.code_dir else "")
            self._handlers[source.logical_id] = counterpart or _given_the_event(_load(source))
        return source, self._handlers[source.logical_id]

    def check(self, function_arn: str) -> None:
        self.handler(function_arn)

    def invoke(self, function_arn: str, event: Event) -> Any:
        """Call the handler; its exceptions propagate (the caller decides what they mean)."""
        source, handler = self.handler(function_arn)
        arn = f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:{source.name}"
        return handler(event, LambdaContext(source.name, arn))


def _load(source: FunctionSource) -> Handler:
    if source.runtime is not None and not source.runtime.startswith("python"):
        raise PermanentError(
            f"function {source.logical_id} runs on {source.runtime}: only Python handlers run locally"
        )
    if source.code_dir is None or not source.code_dir.is_dir():
        raise PermanentError(
            f"function {source.logical_id}: CodeUri is not a local directory ({source.code_dir})"
        )
    if not source.handler or "." not in source.handler:
        raise PermanentError(
            f"function {source.logical_id}: Handler {source.handler!r} is not module.function"
        )
    module_path, function_name = source.handler.rsplit(".", 1)
    path = source.code_dir.joinpath(*module_path.split(".")).with_suffix(".py")
    if not path.is_file():
        raise PermanentError(f"function {source.logical_id}: no handler module {path}")
    module = _import(f"mxgate_lambda_{source.logical_id}", path, str(source.code_dir))
    handler = getattr(module, function_name, None)
    if not callable(handler):
        raise PermanentError(f"function {source.logical_id}: {path} has no {function_name}()")
    return handler  # type: ignore[no-any-return]


def _import(name: str, path: Any, code_dir: str) -> ModuleType:
    """Import one handler module under its own name (every function's file is `app.py`),
    with its code directory importable while it loads, as it is on Lambda."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PermanentError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, code_dir)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # any import-time failure is the function's
        raise PermanentError(f"importing {path} failed: {type(error).__name__}: {error}") from error
    finally:
        sys.path.remove(code_dir)
    return module
