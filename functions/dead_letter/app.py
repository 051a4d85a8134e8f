"""Lambda entrypoint of the DeadLetter steps: record a delivery (DeadLetter) or a message
(DeadLetterProcessing) that could not be completed."""

import gc

gc.disable()  # no collection during the imports (docs/benchmarks.md, Cold start)

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxgate.adapters.aws.bootstrap import services
from mxgate.errors import reported_by_family
from mxgate.workflow.dead_letter import dead_letter
from mxgate.workflow.model import DEAD_LETTER_INPUT, DeadLetterInput
from mxgate.workflow.unprocessed import dead_letter_processing

gc.freeze()  # what the imports made lives as long as the container: never scanned
gc.enable()

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
@reported_by_family
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = DEAD_LETTER_INPUT.validate_python(event)
    logger.append_keys(error=request.error.Error)
    if isinstance(request, DeadLetterInput):
        logger.append_keys(message_id=request.delivery.message.message_id)
        metrics.add_metric(name="DeliveriesDeadLettered", unit=MetricUnit.Count, value=1)
        result = dead_letter(request, services())
    else:
        logger.append_keys(object_key=request.stored.key)
        metrics.add_metric(name="MessagesDeadLettered", unit=MetricUnit.Count, value=1)
        result = dead_letter_processing(request, services())
    metrics.add_metric(
        name="RecipientsDeadLettered", unit=MetricUnit.Count, value=len(result.results)
    )
    return result.model_dump(mode="json")
