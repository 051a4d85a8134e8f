"""The composition root on AWS: typed settings from the function's environment, and the
adapters built once per Lambda container (on first use, never at import). Each boto3 client is
created when an adapter first calls it (`LazyClient`, with its retry and timeout settings), so
a function pays only for its own. `mxgate dlq --aws` builds its clients here too."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

from mxgate.adapters.aws.clients import LazyClient
from mxgate.adapters.aws.failures import error_code, transient_failures
from mxgate.adapters.aws.links import SignedLinks
from mxgate.adapters.aws.s3 import S3ObjectStore
from mxgate.adapters.aws.secrets import secret_field
from mxgate.adapters.aws.settings import AwsSettings, settings
from mxgate.clock import SystemClock
from mxgate.errors import ConfigError, PermanentError
from mxgate.ports import Clock, DnsAnswer

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient

    from mxgate.adapters.aws.archive import MailManagerArchive
    from mxgate.adapters.aws.arrivals import (
        DynamoArrivals,
        SqsArrivalChecks,
        StepFunctionsExecutions,
    )
    from mxgate.adapters.aws.deferral import Redeliverer
    from mxgate.adapters.aws.operator import OperatorAws
    from mxgate.adapters.aws.ses import SesTransport
    from mxgate.adapters.dns import DnsPythonResolver
    from mxgate.authn.arc import Sealer
    from mxgate.delivery.relay import RelayIngress
    from mxgate.desk import Desk
    from mxgate.mailmanager.addresses import SyncResult
    from mxgate.workflow.services import Services


class DnsOnFirstLookup:
    """The Resolver port on dnspython, imported and configured at the first lookup: of the
    functions, only Process (and the arrival check) looks anything up."""

    def __init__(self, server: str | None) -> None:
        self.server = server  # "host:port"; None: the system's resolver
        self._resolver: DnsPythonResolver | None = None

    def query(self, name: str, rrtype: str) -> DnsAnswer:
        if self._resolver is None:
            from mxgate.adapters.dns import DnsPythonResolver  # noqa: PLC0415 -- cold start

            if self.server is None:
                self._resolver = DnsPythonResolver()
            else:
                host, _, port = self.server.rpartition(":")
                self._resolver = DnsPythonResolver([host], int(port))
        return self._resolver.query(name, rrtype)


def signed_links(config: AwsSettings, secrets: SecretsManagerClient) -> SignedLinks | None:
    """The stack's download links, where the function hands links out (Deliver, Download)."""
    if not (config.download_url and config.link_secret):
        return None
    return SignedLinks(
        config.download_url, secret_field(secrets, config.link_secret, "key").encode()
    )


def arc_sealer(config: AwsSettings) -> Sealer | None:
    """The ARC sealing key from Secrets Manager, read once per container."""
    if config.arc_seal_key_secret is None:
        return None
    from mxgate.authn.arc import load_sealer  # noqa: PLC0415 -- cryptography, when sealing

    secrets: Any = LazyClient("secretsmanager")
    secret = secrets.get_secret_value(SecretId=config.arc_seal_key_secret)
    return load_sealer(config.arc_seal_domain, config.arc_seal_selector, secret["SecretString"])


def ses_client(endpoint_url: str | None = None, region: str | None = None) -> SESV2Client:
    """SESv2, making one attempt a call: the state machine owns the retries (clients.py)."""
    return cast("SESV2Client", LazyClient("sesv2", endpoint_url=endpoint_url, region=region))


def ses_transport(
    routing_domain: str | None, *, endpoint_url: str | None = None, region: str | None = None
) -> SesTransport:
    """SES sending to a routing domain at a given endpoint (the one machine's `ses_endpoint`)."""
    from mxgate.adapters.aws.ses import SesTransport  # noqa: PLC0415 -- see services()

    return SesTransport(ses_client(endpoint_url, region), routing_domain)


@cache
def services() -> Services:
    """What every step function's handler runs on. Its adapters are imported here, not with the
    module: the Download, Redeliver and RecipientsSync functions build none of them."""
    from mxgate.adapters.aws.dead_letters import QueueingDeadLetters  # noqa: PLC0415
    from mxgate.adapters.aws.deferral import SqsDeferrals  # noqa: PLC0415
    from mxgate.adapters.aws.dynamodb import DynamoQuarantine, DynamoState  # noqa: PLC0415
    from mxgate.adapters.aws.eventbridge import EventBridgeAppEvents  # noqa: PLC0415
    from mxgate.adapters.aws.hooks import LambdaHooks  # noqa: PLC0415
    from mxgate.adapters.aws.ses import SesTransport  # noqa: PLC0415
    from mxgate.authn.resolver import CachingResolver  # noqa: PLC0415
    from mxgate.delivery.relay import RelayIngressTransport  # noqa: PLC0415
    from mxgate.delivery.smtp import MisconfiguredTransport, submission_or_deferral  # noqa: PLC0415
    from mxgate.delivery.webhook import SignedPoster, signing_keys  # noqa: PLC0415
    from mxgate.ports import Transport  # noqa: PLC0415
    from mxgate.routing.routes import load_routes  # noqa: PLC0415
    from mxgate.workflow.services import Services  # noqa: PLC0415

    config = settings()
    clock = SystemClock()
    routes = load_routes(config.routes_file, config.routes_parameters)
    environ: Mapping[str, str] = os.environ  # secrets the routes name by variable
    state = DynamoState(cast("DynamoDBClient", LazyClient("dynamodb")), config.state_table, clock)
    ses = ses_client()
    ingress = relay_ingress(config)
    transports: dict[str, Transport] = {}
    for name, destination in routes.destinations.items():
        if destination.transport == "ses":
            transports[name] = SesTransport(
                ses, destination.routing_domain, configuration_set=config.ses_configuration_set
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
            transports[name] = submission_or_deferral(destination, environ, config.gateway_host)
    poster = SignedPoster(signing_keys(routes, environ), clock)
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
        loop_key=loop_key,
        resolver=CachingResolver(DnsOnFirstLookup(config.dns_server)),
        sealer=arc_sealer(config),
        deferrals=(
            SqsDeferrals(cast("SQSClient", LazyClient("sqs")), config.defer_queue, clock)
            if config.defer_queue
            else None
        ),
        bounces=SesTransport(ses, None, configuration_set=config.ses_configuration_set),
        hooks=LambdaHooks(cast("LambdaClient", LazyClient("lambda")), routes.hooks, poster),
        webhooks=poster,
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


def relay_ingress(config: AwsSettings) -> RelayIngress | None:
    """The stack's relay ingress point, as the Deliver function's environment names it."""
    from mxgate.delivery.relay import RelayIngress  # noqa: PLC0415 -- see services()

    if not (config.relay_host and config.relay_user and config.relay_secret):
        return None
    return RelayIngress(
        host=config.relay_host,
        port=config.relay_port,
        user=config.relay_user,
        password=SecretPassword(
            cast("SecretsManagerClient", LazyClient("secretsmanager")), config.relay_secret
        ),
        ca_file=str(config.relay_ca_file) if config.relay_ca_file else None,
        helo=config.gateway_host,
    )


@dataclass(frozen=True)
class ArrivalJoin:
    """What the Start function joins with: the arrival records, the state machine, the checks."""

    arrivals: DynamoArrivals
    executions: StepFunctionsExecutions
    checks: SqsArrivalChecks


@cache
def arrival_join() -> ArrivalJoin:
    """What the Start function runs on (besides `services()`, for the arrival check)."""
    from mxgate.adapters.aws.arrivals import (  # noqa: PLC0415 -- the Start function's alone
        DynamoArrivals,
        SqsArrivalChecks,
        StepFunctionsExecutions,
    )

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


def redeliverer(config: AwsSettings | None = None, clock: Clock | None = None) -> Redeliverer:
    """What the Redeliver function runs: the deferred queue's consumer."""
    from mxgate.adapters.aws.deferral import Redeliverer, SqsDeferrals  # noqa: PLC0415

    config = config or settings()
    clock = clock or SystemClock()
    if not config.defer_queue or not config.state_machine_arn:
        raise ConfigError("MXGATE_DEFER_QUEUE and MXGATE_STATE_MACHINE_ARN must be set")
    deferrals = SqsDeferrals(cast("SQSClient", LazyClient("sqs")), config.defer_queue, clock)
    return Redeliverer(
        deferrals,
        cast("SFNClient", LazyClient("stepfunctions")),
        config.state_machine_arn,
        clock,
    )


def aws_archive(operator: OperatorAws, clock: Clock | None = None) -> MailManagerArchive:
    """Mail Manager's archive API for the stack's archive (`mxgate archive --aws`)."""
    from mxgate.adapters.aws.archive import MailManagerArchive  # noqa: PLC0415 -- with --aws

    archive_id = operator.names.archive_id or ""
    return MailManagerArchive(operator.client("mailmanager"), archive_id, clock or SystemClock())


def aws_desk(operator: OperatorAws, routes_file: Path) -> Desk:
    """What `mxgate archive|quarantine|dlq|console --aws` act on: the deployed stack's stores,
    with the operator's credentials (and the clients' retry and timeout settings); releases and
    redrives go to its deferred queue, which the Redeliver function reads."""
    from mxgate.adapters.aws.dead_letters import forget_notices  # noqa: PLC0415 -- the same
    from mxgate.adapters.aws.deferral import SqsDeferrals, StrandedDeferrals  # noqa: PLC0415
    from mxgate.adapters.aws.dynamodb import DynamoQuarantine, DynamoState  # noqa: PLC0415
    from mxgate.adapters.aws.operator import deployed_routes  # noqa: PLC0415
    from mxgate.desk import Desk  # noqa: PLC0415 -- the operators' commands alone

    names = operator.names
    clock = SystemClock()
    table = names.need("state_table")
    dynamodb = cast("DynamoDBClient", operator.client("dynamodb"))
    state = DynamoState(dynamodb, table, clock)
    s3 = cast("S3Client", operator.client("s3"))
    sqs = cast("SQSClient", operator.client("sqs"))
    notices = names.dead_letter_queue
    defer_queue = names.need("defer_queue")
    stranded = names.defer_dead_letter_queue
    return Desk(
        timeline=state,
        messages=state,
        dead_letters=state,
        deferrals=SqsDeferrals(sqs, defer_queue, clock),
        quarantine=DynamoQuarantine(dynamodb, table),
        archive=aws_archive(operator, clock),
        objects=S3ObjectStore(s3),
        routes=deployed_routes(operator, routes_file),
        clock=clock,
        actor=operator.caller,
        where=f"DynamoDB table {table}",
        after_queue="the Redeliver function starts its redelivery within seconds",
        delete_object=S3ObjectStore(s3).delete,
        forget_notices=(lambda ids: forget_notices(sqs, notices, ids)) if notices else None,
        aws=True,
        stranded=StrandedDeferrals(sqs, stranded, defer_queue, clock) if stranded else None,
    )


def sync_directory_list(list_id: str) -> SyncResult:
    """The deployed directory address list made to hold the deployed routes file's addresses
    (the RecipientsSync custom resource runs it on each deploy)."""
    from mxgate.adapters.aws.address_lists import MailManagerAddressLists  # noqa: PLC0415 -- its function's alone
    from mxgate.routing.recipients import sync_directory  # noqa: PLC0415
    from mxgate.routing.routes import load_routes  # noqa: PLC0415

    config = settings()
    routes = load_routes(config.routes_file, config.routes_parameters)
    lists = MailManagerAddressLists(LazyClient("mailmanager"))
    (result,) = sync_directory(lists, [list_id], routes)
    return result
