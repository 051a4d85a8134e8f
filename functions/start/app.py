"""Lambda entrypoint of the Start function: one half of a message arrives (S3's Object Created
event for what WriteToS3 stored, or Mail Manager's InvokeLambda event with the SMTP envelope);
the half that completes the pair starts the message's execution (mxgate.workflow.arrival).
Messages of the arrival-check queue look again at a message still half-arrived."""

from __future__ import annotations

import gc

gc.disable()  # no collection during the imports (docs/benchmarks.md, Cold start)

from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from mxgate.adapters.aws.bootstrap import arrival_join, services
from mxgate.adapters.aws.settings import settings
from mxgate.adapters.aws.triggers import ArrivalCheck, is_arrival_check, read_arrival
from mxgate.workflow import arrival

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch import BatchProcessor
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

gc.freeze()  # what the imports made lives as long as the container: never scanned
gc.enable()

logger = Logger()
metrics = Metrics()


@cache
def check_processor() -> BatchProcessor:
    """The arrival checks' batch processor, made with the first check: powertools' batch
    utility (asyncio with it) costs a cold start tens of ms, and most invocations are halves."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType  # noqa: PLC0415

    return BatchProcessor(event_type=EventType.SQS)


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> Any:
    if is_arrival_check(event):
        from aws_lambda_powertools.utilities.batch import process_partial_response  # noqa: PLC0415

        return process_partial_response(
            event=event, record_handler=check, processor=check_processor(), context=context
        )
    join = arrival_join()
    half = read_arrival(event, settings().mail_manager_hosts)
    logger.append_keys(message_id=half.message_id, half="envelope" if half.envelope else "stored")
    joined = arrival.arrive(half, join.arrivals, join.executions, join.checks)
    metrics.add_metric(name="ArrivalHalves", unit=MetricUnit.Count, value=1)
    if joined.started is not None:
        metrics.add_metric(name="ExecutionsStarted", unit=MetricUnit.Count, value=1)
    logger.info("arrival", extra={"result": joined.describe()})
    return {"message_id": half.message_id, "result": joined.describe()}


def check(record: SQSRecord) -> str:
    """One arrival check; a message found unstarted is reported where the alarm looks."""
    join, config = arrival_join(), settings()
    message_id = ArrivalCheck.model_validate_json(record.body).arrival_check
    metrics.add_metric(name="ArrivalChecks", unit=MetricUnit.Count, value=1)
    checked = arrival.check(
        message_id,
        arrivals=join.arrivals,
        executions=join.executions,
        services=services(),
        raw_bucket=config.raw_bucket,
        raw_prefix=config.raw_prefix,
    )
    if checked.problem is None or checked.record is None:
        return checked.started or "started"
    metrics.add_metric(name="UnstartedMessages", unit=MetricUnit.Count, value=1)
    logger.error("message not started", extra={"message_id": message_id})
    join.checks.report_unstarted(checked.record, checked.problem)
    return checked.problem
