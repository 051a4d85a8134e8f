"""Lambda entrypoint of the Defer steps: schedule the next attempt of a delivery (Defer) or of a
message Process could not handle (DeferProcessing), or expire it."""

import gc

gc.disable()  # no collection during the imports (docs/benchmarks.md, Cold start)

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxgate.adapters.aws.bootstrap import services
from mxgate.errors import reported_by_family
from mxgate.workflow.defer import defer
from mxgate.workflow.model import DEFER_INPUT, DeferInput
from mxgate.workflow.unprocessed import defer_processing

gc.freeze()  # what the imports made lives as long as the container: never scanned
gc.enable()

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
@reported_by_family
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = DEFER_INPUT.validate_python(event)
    if isinstance(request, DeferInput):
        logger.append_keys(
            message_id=request.delivery.message.message_id,
            destination=request.delivery.destination,
        )
        result = defer(request, services())
    else:
        logger.append_keys(object_key=request.stored.key, error=request.error.Error)
        metrics.add_metric(name="ProcessingDeferred", unit=MetricUnit.Count, value=1)
        result = defer_processing(request, services())
    for outcome in ("deferred", "bounced", "dead_lettered"):
        count = sum(1 for r in result.results if r.outcome == outcome)
        if count:
            metrics.add_metric(name=f"Recipients_{outcome}", unit=MetricUnit.Count, value=count)
    return result.model_dump(mode="json")
