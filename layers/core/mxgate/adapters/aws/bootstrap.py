"""The composition root on AWS: typed settings from the function's environment, and the
adapters built once per Lambda container (on first use, never at import). Each boto3 client is
created when an adapter first calls it (`LazyClient`), so a function pays only for its own."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, cast

from mxgate.adapters.aws.arrivals import DynamoArrivals, SqsArrivalChecks, StepFunctionsExecutions
from mxgate.adapters.aws.clients import LazyClient
from mxgate.adapters.aws.delivery import delivery_adapters
from mxgate.adapters.aws.dynamodb import DynamoQuarantine, DynamoState
from mxgate.adapters.aws.events import EventBridgeAppEvents, QueueingDeadLetters
from mxgate.adapters.aws.s3 import S3ObjectStore
from mxgate.adapters.aws.settings import settings
from mxgate.adapters.dns import DnsPythonResolver
from mxgate.authn.resolver import CachingResolver
from mxgate.clock import SystemClock
from mxgate.errors import ConfigError
from mxgate.routing.config import load_routes
from mxgate.workflow.services import Services

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient


def _dns(server: str | None) -> DnsPythonResolver:
    if server is None:
        return DnsPythonResolver()
    host, _, port = server.rpartition(":")
    return DnsPythonResolver([host], int(port))


@cache
def services() -> Services:
    config = settings()
    clock = SystemClock()
    routes = load_routes(config.routes_file)
    state = DynamoState(cast("DynamoDBClient", LazyClient("dynamodb")), config.state_table, clock)
    delivery = delivery_adapters(routes, clock, config)
    return Services(
        objects=S3ObjectStore(cast("S3Client", LazyClient("s3"))),
        timeline=state,
        idempotency=state,
        transports=delivery.transports,
        app_events=EventBridgeAppEvents(
            cast("EventBridgeClient", LazyClient("events")), config.event_bus
        ),
        dead_letters=QueueingDeadLetters(
            state, cast("SQSClient", LazyClient("sqs")), config.dead_letter_queue
        ),
        routes=routes,
        clock=clock,
        gateway_host=config.gateway_host,
        resolver=CachingResolver(_dns(config.dns_server)),
        deferrals=delivery.deferrals,
        bounces=delivery.bounces,
        hooks=delivery.hooks,
        webhooks=delivery.webhooks,
        quarantine=DynamoQuarantine(
            cast("DynamoDBClient", LazyClient("dynamodb")), config.state_table
        ),
        quarantine_days=config.quarantine_days,
    )


@dataclass(frozen=True)
class ArrivalJoin:
    """What the Start function joins with: the arrival records, the state machine, the checks."""

    arrivals: DynamoArrivals
    executions: StepFunctionsExecutions
    checks: SqsArrivalChecks


@cache
def arrival_join() -> ArrivalJoin:
    config = settings()
    if not (config.state_machine_arn and config.arrival_check_queue and config.unstarted_queue):
        raise ConfigError(
            "the Start function needs MXGATE_STATE_MACHINE_ARN, MXGATE_ARRIVAL_CHECK_QUEUE and "
            "MXGATE_UNSTARTED_QUEUE"
        )
    sqs = cast("SQSClient", LazyClient("sqs"))
    return ArrivalJoin(
        arrivals=DynamoArrivals(
            cast("DynamoDBClient", LazyClient("dynamodb")), config.state_table, SystemClock()
        ),
        executions=StepFunctionsExecutions(
            cast("SFNClient", LazyClient("stepfunctions")), config.state_machine_arn
        ),
        checks=SqsArrivalChecks(sqs, config.arrival_check_queue, config.unstarted_queue),
    )
