"""Lambda entrypoint of the Process step: read, parse and classify one stored message.

The state machine passes `{bucket, key, envelope}`: the Start function joined Mail Manager's
stored object with its envelope (mxgate.workflow.arrival).
"""

import gc

gc.disable()  # no collection during the imports (docs/benchmarks.md, Cold start)

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxgate.adapters.aws.bootstrap import services
from mxgate.errors import reported_by_family
from mxgate.workflow.model import ProcessInput
from mxgate.workflow.process import process

gc.freeze()  # what the imports made lives as long as the container: never scanned
gc.enable()

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
@reported_by_family
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_metric(name="MessagesRead", unit=MetricUnit.Count, value=1)  # failures included
    request = ProcessInput.model_validate(event)
    logger.append_keys(object_key=request.key)
    result = process(request, services())
    metrics.add_metric(
        name="DeliveriesPlanned", unit=MetricUnit.Count, value=len(result.deliveries)
    )
    if result.quarantined:  # the QuarantineAlarm watches this
        metrics.add_metric(
            name="RecipientsQuarantined", unit=MetricUnit.Count, value=len(result.quarantined)
        )
        logger.warning("quarantined", extra={"recipients": len(result.quarantined)})
    return result.model_dump(mode="json")
