"""The delivery adapters on AWS, built from the routes and the function's environment:
transports per destination, the deferred queue, the DSN transport, hooks and webhooks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from pydantic import BaseModel, ConfigDict

from mxgate.adapters.aws.deferral import Redeliverer, SqsDeferrals
from mxgate.adapters.aws.hooks import LambdaHooks
from mxgate.adapters.aws.ses import SesTransport
from mxgate.delivery.smtp import submission_or_deferral
from mxgate.delivery.webhook import SignedPoster, signing_keys
from mxgate.errors import ConfigError
from mxgate.ports import Clock, Transport
from mxgate.routing.config import Routes

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client

# The state machine owns retries (backoff with jitter, then deferral): an SDK that retried
# on its own as well would multiply the attempts and hide throttling from the timeline.
NO_SDK_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


class AwsDeliverySettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    defer_queue: str | None = None  # MXGATE_DEFER_QUEUE: the deferred queue's URL
    state_machine_arn: str | None = None  # MXGATE_STATE_MACHINE_ARN (the Redeliver function)
    ses_configuration_set: str | None = None  # MXGATE_SES_CONFIGURATION_SET

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AwsDeliverySettings:
        env = os.environ if environ is None else environ
        return cls(
            defer_queue=env.get("MXGATE_DEFER_QUEUE") or None,
            state_machine_arn=env.get("MXGATE_STATE_MACHINE_ARN") or None,
            ses_configuration_set=env.get("MXGATE_SES_CONFIGURATION_SET") or None,
        )


def ses_client(endpoint_url: str | None = None, region: str | None = None) -> SESV2Client:
    return boto3.client(
        "sesv2", endpoint_url=endpoint_url, region_name=region, config=NO_SDK_RETRIES
    )


@dataclass(frozen=True)
class DeliveryAdapters:
    transports: dict[str, Transport]
    deferrals: SqsDeferrals | None
    bounces: Transport
    hooks: LambdaHooks
    webhooks: SignedPoster


def delivery_adapters(
    routes: Routes, clock: Clock, gateway_host: str, environ: Mapping[str, str] | None = None
) -> DeliveryAdapters:
    env = os.environ if environ is None else environ
    settings = AwsDeliverySettings.from_env(env)
    ses = ses_client()
    transports: dict[str, Transport] = {}
    for name, destination in routes.destinations.items():
        if destination.transport == "ses":
            transports[name] = SesTransport(
                ses, destination.routing_domain, configuration_set=settings.ses_configuration_set
            )
        else:
            transports[name] = submission_or_deferral(destination, env, gateway_host)
    poster = SignedPoster(signing_keys(routes, env), clock)
    return DeliveryAdapters(
        transports=transports,
        deferrals=(
            SqsDeferrals(boto3.client("sqs"), settings.defer_queue, clock)
            if settings.defer_queue
            else None
        ),
        bounces=SesTransport(ses, None, configuration_set=settings.ses_configuration_set),
        hooks=LambdaHooks(boto3.client("lambda"), routes.hooks, poster),
        webhooks=poster,
    )


def redeliverer(clock: Clock, environ: Mapping[str, str] | None = None) -> Redeliverer:
    settings = AwsDeliverySettings.from_env(environ)
    if not settings.defer_queue or not settings.state_machine_arn:
        raise ConfigError("MXGATE_DEFER_QUEUE and MXGATE_STATE_MACHINE_ARN must be set")
    deferrals = SqsDeferrals(boto3.client("sqs"), settings.defer_queue, clock)
    return Redeliverer(deferrals, boto3.client("stepfunctions"), settings.state_machine_arn, clock)
