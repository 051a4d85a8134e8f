"""Lambda entrypoint of the Quarantine step: keep a message that could not be processed."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxgate.adapters.aws.bootstrap import services
from mxgate.errors import reported_by_family
from mxgate.workflow.model import QuarantineInput
from mxgate.workflow.process import quarantine

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
@reported_by_family
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = QuarantineInput.model_validate(event)
    logger.append_keys(object_key=request.key, error=request.error.Error)
    metrics.add_metric(name="MessagesQuarantined", unit=MetricUnit.Count, value=1)
    result = quarantine(request, services())
    return result.model_dump(mode="json")
