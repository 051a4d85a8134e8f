"""Lambda entrypoint of the RoutesCheck custom resource: at deploy time, the routes file of
the config layer, filled with the stack's parameters, must be valid and route every domain the
traffic policy accepts; otherwise the deployment fails, and says why."""

import gc

gc.disable()  # no collection during the imports (docs/benchmarks.md, Cold start)

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxgate.adapters.aws.custom_resource import CustomResourceRequest, respond
from mxgate.adapters.aws.settings import settings
from mxgate.errors import ConfigError
from mxgate.routing.routes import load_checked_routes

gc.freeze()  # what the imports made lives as long as the container: never scanned
gc.enable()

logger = Logger()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = CustomResourceRequest.model_validate(event)
    ok, reason = True, "the routes file routes every domain the stack accepts"
    if request.RequestType != "Delete":  # a deleted stack has nothing left to check
        config = settings()
        accepted = {
            str(domain).casefold(): "the traffic policy (EmployeeDomain, AppDomain)"
            for domain in request.ResourceProperties.get("AcceptedDomains", [])
        }
        try:
            load_checked_routes(config.routes_file, config.routes_parameters, accepted)
        except ConfigError as error:
            ok, reason = False, str(error)
            logger.error("routes refused", extra={"reason": reason})
    respond(request, ok=ok, reason=reason, physical_id=f"{request.StackId}/routes-check")
    return {"ok": ok, "reason": reason}
