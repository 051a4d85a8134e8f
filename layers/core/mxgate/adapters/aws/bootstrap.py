"""The composition root on AWS: typed settings from the function's environment, and the
adapters built once per Lambda container (on first use, never at import). Each boto3 client is
created when an adapter first calls it (`LazyClient`), so a function pays only for its own."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, cast

from mxgate.adapters.aws.clients import LazyClient
from mxgate.adapters.aws.delivery import delivery_adapters
from mxgate.adapters.aws.dynamodb import DynamoQuarantine, DynamoState
from mxgate.adapters.aws.events import EventBridgeAppEvents, QueueingDeadLetters
from mxgate.adapters.aws.links import SignedLinks
from mxgate.adapters.aws.s3 import S3ObjectStore
from mxgate.adapters.aws.secrets import secret_field
from mxgate.adapters.aws.settings import AwsSettings, settings
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
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient


def _dns(server: str | None) -> DnsPythonResolver:
    if server is None:
        return DnsPythonResolver()
    host, _, port = server.rpartition(":")
    return DnsPythonResolver([host], int(port))


def signed_links(config: AwsSettings, secrets: SecretsManagerClient) -> SignedLinks | None:
    """The stack's download links, where the function hands links out (Deliver, Download)."""
    if not (config.download_url and config.link_secret):
        return None
    return SignedLinks(
        config.download_url, secret_field(secrets, config.link_secret, "key").encode()
    )


@cache
def services() -> Services:
    config = settings()
    clock = SystemClock()
    routes = load_routes(config.routes_file, config.routes_parameters)
    state = DynamoState(cast("DynamoDBClient", LazyClient("dynamodb")), config.state_table, clock)
    delivery = delivery_adapters(routes, clock, config)
    secrets = cast("SecretsManagerClient", LazyClient("secretsmanager"))
    loop_key = None
    if config.loop_secret:  # the Process function's: it marks deliveries and checks returns
        loop_key = secret_field(secrets, config.loop_secret, "key").encode()
    return Services(
        objects=S3ObjectStore(
            cast("S3Client", LazyClient("s3")), links=signed_links(config, secrets), clock=clock
        ),
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
        envelope_sidecars=config.envelope_sidecars,
        submission_ingress_points=config.submission_ingress_points,
        loop_key=loop_key,
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


@cache
def downloads() -> tuple[SignedLinks, S3ObjectStore, str, SystemClock]:
    """What the Download function needs: the links to check, the store that presigns, the
    bucket links may name, and the clock."""
    config = settings()
    if not config.link_secret:
        raise ConfigError("MXGATE_LINK_SECRET must be set")
    secrets = cast("SecretsManagerClient", LazyClient("secretsmanager"))
    key = secret_field(secrets, config.link_secret, "key").encode()
    links = SignedLinks(config.download_url or "", key)  # it checks links: no URL needed
    clock = SystemClock()
    store = S3ObjectStore(cast("S3Client", LazyClient("s3")), clock=clock)
    return links, store, config.raw_bucket, clock
