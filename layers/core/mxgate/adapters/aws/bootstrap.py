"""The composition root on AWS: typed settings from the function's environment, and the
adapters built once per Lambda container (on first use, never at import). Each boto3 client is
created when an adapter first calls it (`LazyClient`), so a function pays only for its own."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, cast

from pydantic import BaseModel, ConfigDict

from mxgate.adapters.aws.clients import LazyClient
from mxgate.adapters.aws.dynamodb import DynamoState
from mxgate.adapters.aws.events import EventBridgeAppEvents, QueueingDeadLetters
from mxgate.adapters.aws.s3 import S3ObjectStore
from mxgate.adapters.aws.ses import SesTransport
from mxgate.adapters.dns import DnsPythonResolver
from mxgate.authn.resolver import CachingResolver
from mxgate.clock import SystemClock
from mxgate.routing.config import load_routes
from mxgate.workflow.services import Services

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sqs import SQSClient


class AwsSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    raw_bucket: str
    raw_prefix: str = "raw/"  # the rule set's WriteToS3 S3Prefix
    state_table: str
    dead_letter_queue: str  # the queue URL
    routes_file: Path = Path("/opt/routes.yaml")  # the config layer
    event_bus: str = "default"
    gateway_host: str = "mxgate"
    dns_server: str | None = None  # "host:port"; unset: the Lambda's own resolver

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AwsSettings:
        env = os.environ if environ is None else environ
        values = {
            "raw_bucket": env.get("MXGATE_RAW_BUCKET"),
            "raw_prefix": env.get("MXGATE_RAW_PREFIX"),
            "state_table": env.get("MXGATE_STATE_TABLE"),
            "dead_letter_queue": env.get("MXGATE_DEAD_LETTER_QUEUE"),
            "routes_file": env.get("MXGATE_ROUTES_FILE"),
            "event_bus": env.get("MXGATE_EVENT_BUS"),
            "gateway_host": env.get("MXGATE_GATEWAY_HOST"),
            "dns_server": env.get("MXGATE_DNS_SERVER"),
        }
        return cls.model_validate({k: v for k, v in values.items() if v is not None})


def _dns(server: str | None) -> DnsPythonResolver:
    if server is None:
        return DnsPythonResolver()
    host, _, port = server.rpartition(":")
    return DnsPythonResolver([host], int(port))


@cache
def settings() -> AwsSettings:
    return AwsSettings.from_env()


@cache
def services() -> Services:
    config = settings()
    clock = SystemClock()
    routes = load_routes(config.routes_file)
    state = DynamoState(cast("DynamoDBClient", LazyClient("dynamodb")), config.state_table, clock)
    ses = cast("SESV2Client", LazyClient("sesv2"))
    transports = {
        name: SesTransport(ses, destination.routing_domain)
        for name, destination in routes.destinations.items()
        if destination.transport == "ses"
    }
    return Services(
        objects=S3ObjectStore(cast("S3Client", LazyClient("s3"))),
        timeline=state,
        idempotency=state,
        transports=transports,
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
    )
