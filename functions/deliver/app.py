"""Lambda entrypoint of the Deliver step: hand one delivery to its mailbox host or app."""

import gc

gc.disable()  # no collection during the imports (docs/benchmarks.md, Cold start)

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxgate.adapters.aws.bootstrap import services
from mxgate.errors import reported_by_family
from mxgate.workflow.deliver import deliver
from mxgate.workflow.model import DeliverInput

gc.freeze()  # what the imports made lives as long as the container: never scanned
gc.enable()

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
@reported_by_family
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = DeliverInput.model_validate(event)
    logger.append_keys(
        message_id=request.delivery.message.message_id, destination=request.delivery.destination
    )
    metrics.add_metric(name="DeliveryAttempts", unit=MetricUnit.Count, value=1)
    result = deliver(request, services())
    metrics.add_metric(name="RecipientsDelivered", unit=MetricUnit.Count, value=len(result.results))
    return result.model_dump(mode="json")
