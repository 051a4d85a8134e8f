"""Lambda entrypoint of the Process step: read, parse and classify one stored message.

The state machine passes `{bucket, key}`; an S3 "Object Created" event from EventBridge and
Mail Manager's InvokeLambda event are read too (mxgate.adapters.aws.triggers).
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxgate.adapters.aws.bootstrap import services
from mxgate.adapters.aws.settings import settings
from mxgate.adapters.aws.triggers import keep_envelope, read_trigger
from mxgate.errors import reported_by_family
from mxgate.workflow import steps

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
@reported_by_family
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_metric(name="MessagesRead", unit=MetricUnit.Count, value=1)  # failures included
    config = settings()
    trigger = read_trigger(event, config.raw_bucket, config.raw_prefix)
    logger.append_keys(object_key=trigger.request.key)
    keep_envelope(services().objects, trigger)
    result = steps.process(trigger.request, services())
    metrics.add_metric(
        name="DeliveriesPlanned", unit=MetricUnit.Count, value=len(result.deliveries)
    )
    return result.model_dump(mode="json")
