"""Lambda entrypoint of the deferred queue's consumer: start a redelivery execution for each
deferred delivery that is due (an early one goes back on the queue with the time left)."""

import gc

gc.disable()  # no collection during the imports (docs/benchmarks.md, Cold start)

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxgate.adapters.aws.bootstrap import redeliverer
from mxgate.adapters.aws.deferral import Redeliverer

gc.freeze()  # what the imports made lives as long as the container: never scanned
gc.enable()

logger = Logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)


@cache
def consumer() -> Redeliverer:
    return redeliverer()


def record_handler(record: SQSRecord) -> str:
    outcome = consumer().start_due(record.body)
    started = outcome.startswith("started")
    metrics.add_metric(
        name="RedeliveriesStarted" if started else "DeferralsWaiting",
        unit=MetricUnit.Count,
        value=1,
    )
    return outcome


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
