"""Post-ingress hooks on AWS: a Lambda function invoked synchronously with the event, or a
signed HTTP POST. A hook with neither (only a local command) is skipped here, and says so."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from mxgate.adapters.aws.failures import error_code, is_transient
from mxgate.delivery.hooks import HookRunner
from mxgate.errors import PermanentError, TransientError
from mxgate.ports import Webhooks
from mxgate.routing.routes import Hook

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

# Besides throttling and service failures (failures.is_transient):
_LAMBDA_TRANSIENT_CODES = frozenset({"ResourceNotReadyException", "EC2ThrottledException"})
_TRANSIENT_FUNCTION_ERRORS = {"TransientError", "Sandbox.Timedout", "Runtime.ExitError"}


class LambdaHooks(HookRunner):
    elsewhere = "a local command"

    def __init__(self, client: LambdaClient, hooks: Mapping[str, Hook], poster: Webhooks) -> None:
        super().__init__(hooks, poster)
        self.client = client

    def run_here(self, hook: str, spec: Hook, event_id: str, body: bytes) -> str | None:
        if spec.function is None:
            return None
        function = spec.function
        try:
            response = self.client.invoke(
                FunctionName=function, InvocationType="RequestResponse", Payload=body
            )
        except ClientError as error:
            detail = f"hook {hook}: Lambda {error_code(error)}"
            if is_transient(error, also=_LAMBDA_TRANSIENT_CODES):
                raise TransientError(detail) from error
            raise PermanentError(detail) from error
        except BotoCoreError as error:
            raise TransientError(f"hook {hook}: Lambda unreachable: {error}") from error
        function_error = str(response.get("FunctionError") or "")
        if not function_error:
            return f"hook {hook}: {function} returned"
        try:
            failure = json.loads(response["Payload"].read())
        except ValueError:
            failure = {}
        kind = str(failure.get("errorType", function_error))
        detail = f"hook {hook}: {function} failed: {kind}: {failure.get('errorMessage', '')}"
        if kind in _TRANSIENT_FUNCTION_ERRORS:
            raise TransientError(detail)
        raise PermanentError(detail)
