"""The delivery adapters on AWS, built from the routes and the function's environment:
transports per destination, the deferred queue, the DSN transport, hooks and webhooks."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from botocore.exceptions import ClientError

from mxgate.adapters.aws.clients import LazyClient
from mxgate.adapters.aws.deferral import Redeliverer, SqsDeferrals
from mxgate.adapters.aws.failures import error_code, transient_failures
from mxgate.adapters.aws.hooks import LambdaHooks
from mxgate.adapters.aws.ses import SesTransport
from mxgate.adapters.aws.settings import AwsSettings
from mxgate.delivery.relay import RelayIngress, RelayIngressTransport
from mxgate.delivery.smtp import MisconfiguredTransport, submission_or_deferral
from mxgate.delivery.webhook import SignedPoster, signing_keys
from mxgate.errors import ConfigError, PermanentError
from mxgate.ports import Clock, Transport
from mxgate.routing.config import Routes

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient


def ses_client(endpoint_url: str | None = None, region: str | None = None) -> SESV2Client:
    """SESv2, making one attempt a call: the state machine owns the retries (clients.py)."""
    return cast("SESV2Client", LazyClient("sesv2", endpoint_url=endpoint_url, region=region))


@dataclass(frozen=True)
class DeliveryAdapters:
    transports: dict[str, Transport]
    deferrals: SqsDeferrals | None
    bounces: Transport
    hooks: LambdaHooks
    webhooks: SignedPoster


def delivery_adapters(
    routes: Routes, clock: Clock, settings: AwsSettings, environ: Mapping[str, str] | None = None
) -> DeliveryAdapters:
    """`environ` holds the secrets the routes name by variable (SMTP passwords, webhook keys)."""
    env = os.environ if environ is None else environ
    ses = ses_client()
    transports: dict[str, Transport] = {}
    ingress = relay_ingress(settings)
    for name, destination in routes.destinations.items():
        if destination.transport == "ses":
            transports[name] = SesTransport(
                ses, destination.routing_domain, configuration_set=settings.ses_configuration_set
            )
        elif destination.transport == "mail_manager":
            assert destination.relay is not None
            transports[name] = (
                RelayIngressTransport(ingress, destination.relay)
                if ingress is not None
                else MisconfiguredTransport(
                    "the relay ingress point is not configured (MXGATE_RELAY_HOST, "
                    "MXGATE_RELAY_USER and MXGATE_RELAY_SECRET on the Deliver function)"
                )
            )
        else:
            transports[name] = submission_or_deferral(destination, env, settings.gateway_host)
    poster = SignedPoster(signing_keys(routes, env), clock)
    return DeliveryAdapters(
        transports=transports,
        deferrals=(
            SqsDeferrals(cast("SQSClient", LazyClient("sqs")), settings.defer_queue, clock)
            if settings.defer_queue
            else None
        ),
        bounces=SesTransport(ses, None, configuration_set=settings.ses_configuration_set),
        hooks=LambdaHooks(cast("LambdaClient", LazyClient("lambda")), routes.hooks, poster),
        webhooks=poster,
    )


class SecretPassword:
    """The `password` key of a Secrets Manager secret, read on first use and then kept."""

    def __init__(self, client: SecretsManagerClient, secret_arn: str) -> None:
        self.client = client
        self.secret_arn = secret_arn
        self._password: str | None = None

    def __call__(self) -> str:
        if self._password is None:
            with transient_failures("Secrets Manager relay password"):
                try:
                    value = self.client.get_secret_value(SecretId=self.secret_arn)
                except ClientError as error:
                    raise PermanentError(
                        f"the relay password secret {self.secret_arn}: {error_code(error)}"
                    ) from error
            password = json.loads(value["SecretString"]).get("password")
            if not isinstance(password, str):
                raise PermanentError(f"the secret {self.secret_arn} has no key `password`")
            self._password = password
        return self._password


def relay_ingress(settings: AwsSettings) -> RelayIngress | None:
    """The stack's relay ingress point, as the Deliver function's environment names it."""
    if not (settings.relay_host and settings.relay_user and settings.relay_secret):
        return None
    return RelayIngress(
        host=settings.relay_host,
        port=settings.relay_port,
        user=settings.relay_user,
        password=SecretPassword(
            cast("SecretsManagerClient", LazyClient("secretsmanager")), settings.relay_secret
        ),
        ca_file=str(settings.relay_ca_file) if settings.relay_ca_file else None,
        helo=settings.gateway_host,
    )


def redeliverer(clock: Clock, settings: AwsSettings) -> Redeliverer:
    if not settings.defer_queue or not settings.state_machine_arn:
        raise ConfigError("MXGATE_DEFER_QUEUE and MXGATE_STATE_MACHINE_ARN must be set")
    deferrals = SqsDeferrals(cast("SQSClient", LazyClient("sqs")), settings.defer_queue, clock)
    return Redeliverer(
        deferrals,
        cast("SFNClient", LazyClient("stepfunctions")),
        settings.state_machine_arn,
        clock,
    )
