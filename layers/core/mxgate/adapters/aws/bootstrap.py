"""The composition root on AWS: typed settings from the function's environment, and the
adapters built once per Lambda container (on first use, never at import)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import boto3
from pydantic import BaseModel, ConfigDict

from mxgate.adapters.aws.delivery import delivery_adapters
from mxgate.adapters.aws.dynamodb import DynamoState
from mxgate.adapters.aws.events import EventBridgeAppEvents, QueueingDeadLetters
from mxgate.adapters.aws.s3 import S3ObjectStore
from mxgate.clock import SystemClock
from mxgate.routing.config import load_routes
from mxgate.workflow.services import Services


class AwsSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    raw_bucket: str
    state_table: str
    dead_letter_queue: str
    routes_file: Path = Path("/opt/routes.yaml")  # the config layer
    event_bus: str = "default"
    gateway_host: str = "mxgate"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AwsSettings:
        env = os.environ if environ is None else environ
        values = {
            "raw_bucket": env.get("MXGATE_RAW_BUCKET"),
            "state_table": env.get("MXGATE_STATE_TABLE"),
            "dead_letter_queue": env.get("MXGATE_DEAD_LETTER_QUEUE"),
            "routes_file": env.get("MXGATE_ROUTES_FILE"),
            "event_bus": env.get("MXGATE_EVENT_BUS"),
            "gateway_host": env.get("MXGATE_GATEWAY_HOST"),
        }
        return cls.model_validate({k: v for k, v in values.items() if v is not None})


@cache
def services() -> Services:
    settings = AwsSettings.from_env()
    clock = SystemClock()
    routes = load_routes(settings.routes_file)
    state = DynamoState(boto3.client("dynamodb"), settings.state_table, clock)
    delivery = delivery_adapters(routes, clock, settings.gateway_host)
    return Services(
        objects=S3ObjectStore(boto3.client("s3")),
        timeline=state,
        idempotency=state,
        transports=delivery.transports,
        app_events=EventBridgeAppEvents(boto3.client("events"), settings.event_bus),
        dead_letters=QueueingDeadLetters(state, boto3.client("sqs"), settings.dead_letter_queue),
        routes=routes,
        clock=clock,
        gateway_host=settings.gateway_host,
        deferrals=delivery.deferrals,
        bounces=delivery.bounces,
        hooks=delivery.hooks,
        webhooks=delivery.webhooks,
    )
