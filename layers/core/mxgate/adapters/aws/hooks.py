"""Post-ingress hooks on AWS: a Lambda function invoked synchronously with the event, or a
signed HTTP POST. A hook with neither (only a local command) is skipped here, and says so."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from mxgate.errors import PermanentError, TransientError
from mxgate.ports import Webhooks
from mxgate.routing.config import Hook

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

_TRANSIENT_CODES = {
    "TooManyRequestsException",
    "ServiceException",
    "ResourceNotReadyException",
    "EC2ThrottledException",
    "ThrottlingException",
}
_TRANSIENT_FUNCTION_ERRORS = {"TransientError", "Sandbox.Timedout", "Runtime.ExitError"}


class LambdaHooks:
    def __init__(self, client: LambdaClient, hooks: Mapping[str, Hook], poster: Webhooks) -> None:
        self.client = client
        self.hooks = hooks
        self.poster = poster

    def call(self, hook: str, event_id: str, event: Mapping[str, object]) -> str:
        spec = self.hooks.get(hook)
        if spec is None:
            raise PermanentError(f"no hook {hook!r} in the routes file")
        body = json.dumps(event, ensure_ascii=False).encode()
        if spec.function is not None:
            return self._invoke(hook, spec.function, body)
        if spec.url is not None and spec.secret_env is not None:
            return self.poster.post(spec.url, spec.secret_env, event_id, body, spec.timeout)
        return "skipped: this hook only has a local command"

    def _invoke(self, hook: str, function: str, body: bytes) -> str:
        try:
            response = self.client.invoke(
                FunctionName=function, InvocationType="RequestResponse", Payload=body
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            detail = f"hook {hook}: Lambda {code}"
            if code in _TRANSIENT_CODES or status >= 500:
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
