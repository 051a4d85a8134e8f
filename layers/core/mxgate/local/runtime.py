"""The composition root of the one-machine runtime: reads the configuration once, builds the
adapters, and wires the ingress, the Mail Manager emulator, the workflow and the mailbox hosts."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from mxgate.adapters.local.appevents import FileAppEvents
from mxgate.adapters.local.hooks import LocalHooks
from mxgate.adapters.local.objects import FileObjectStore
from mxgate.adapters.local.state import SqliteState
from mxgate.clock import SystemClock
from mxgate.delivery.smtp import SmtpTarget, SmtpTransport, submission_or_deferral
from mxgate.delivery.webhook import SignedPoster, signing_keys
from mxgate.errors import ConfigError
from mxgate.local.addresslists import FileAddressBook
from mxgate.local.config import LocalConfig, SesEndpoint, load_local_config
from mxgate.local.logs import VendedLogs
from mxgate.local.mailmanager import LocalMailManager
from mxgate.local.settings import LocalSettings
from mxgate.local.spool import Spool
from mxgate.local.workflow import LocalWorkflow, StateMachineSource, load_state_machine
from mxgate.mailmanager.config import MailManagerConfig, load_mail_manager
from mxgate.mailmanager.models import IngressPoint, RuleSet, TrafficPolicy
from mxgate.mailmanager.template import read_samconfig_parameters
from mxgate.ports import Transport
from mxgate.routing.config import Routes, load_routes
from mxgate.workflow.services import Services

DEFAULT_MAX_MESSAGE_SIZE = 40 * 1024 * 1024  # Mail Manager's own limit


@dataclass(frozen=True)
class Paths:
    home: Path

    @property
    def spool(self) -> Path:
        return self.home / "spool"

    @property
    def objects(self) -> Path:
        return self.home / "objects"

    @property
    def mailboxes(self) -> Path:
        return self.home / "mailboxes"

    @property
    def events(self) -> Path:
        return self.home / "events"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def state_db(self) -> Path:
        return self.home / "state.db"

    @property
    def tls(self) -> Path:
        return self.home / "tls"

    @property
    def quarantine(self) -> Path:
        return self.home / "quarantine"

    @property
    def address_lists(self) -> Path:
        return self.home / "address-lists"

    @property
    def ports_file(self) -> Path:
        return self.home / "run" / "ports.json"


@dataclass(frozen=True)
class LocalSetup:
    """Everything the configuration says, validated; no sockets, no threads."""

    settings: LocalSettings
    config: LocalConfig
    mail_manager: MailManagerConfig
    ingress_id: str
    ingress: IngressPoint
    traffic_policy: TrafficPolicy
    rule_set: RuleSet
    routes: Routes
    state_machine: StateMachineSource

    @cached_property
    def dirs(self) -> Paths:
        return Paths(self.settings.home.resolve())

    @property
    def max_message_size(self) -> int:
        return self.traffic_policy.MaxMessageSizeBytes or DEFAULT_MAX_MESSAGE_SIZE

    @property
    def smtp_port(self) -> int:
        return (
            self.settings.smtp_port
            if self.settings.smtp_port is not None
            else self.config.smtp.port
        )

    @property
    def replace_mail_from(self) -> str:
        return f"postmaster@{self.routes.employee_domains[0]}"


def load_setup(settings: LocalSettings) -> LocalSetup:
    config = load_local_config(settings.config)
    parameters = {**read_samconfig_parameters(config.samconfig), **config.parameters}
    mail_manager = load_mail_manager(config.template, parameters)
    ingress_id, ingress = mail_manager.ingress_point(config.ingress_point)
    routes = load_routes(config.routes)
    unmapped = sorted(set(routes.destinations) - set(config.destinations))
    if unmapped:
        raise ConfigError(
            f"{settings.config}: routes destinations {unmapped} have no local mailbox host "
            "under `destinations:`"
        )
    unknown = sorted(set(config.destinations) - set(routes.destinations))
    if unknown:
        raise ConfigError(f"{settings.config}: destinations {unknown} are not in the routes file")
    return LocalSetup(
        settings=settings,
        config=config,
        mail_manager=mail_manager,
        ingress_id=ingress_id,
        ingress=ingress,
        traffic_policy=mail_manager.traffic_policy(ingress),
        rule_set=mail_manager.rule_set(ingress),
        routes=routes,
        state_machine=load_state_machine(config.template, mail_manager.resolver),
    )


def mailbox_transports(setup: LocalSetup, ports: dict[str, int]) -> dict[str, SmtpTransport]:
    return {
        host: SmtpTransport(SmtpTarget("127.0.0.1", port, helo=setup.settings.hostname))
        for host, port in ports.items()
    }


@dataclass
class Worker:
    """What one worker process needs to take a spooled message through to its end."""

    setup: LocalSetup
    state: SqliteState
    spool: Spool
    mail_manager: LocalMailManager
    workflow: LocalWorkflow


def destination_transports(
    setup: LocalSetup, hosts: Mapping[str, Transport], environ: Mapping[str, str]
) -> dict[str, Transport]:
    """Each routes destination's transport here: a local mailbox host standing in (by default),
    the SES API at a given endpoint, or the destination as routed (SMTP submission)."""
    transports: dict[str, Transport] = {}
    for name, local in setup.config.destinations.items():
        destination = setup.routes.destinations[name]
        if isinstance(local, str):
            transports[name] = hosts[local]
        elif isinstance(local, SesEndpoint):
            from mxgate.adapters.aws.delivery import ses_client  # noqa: PLC0415 -- boto3 on demand
            from mxgate.adapters.aws.ses import SesTransport  # noqa: PLC0415

            transports[name] = SesTransport(
                ses_client(endpoint_url=local.ses_endpoint, region=local.region),
                destination.routing_domain,
            )
        elif destination.transport == "smtp":
            transports[name] = submission_or_deferral(destination, environ, setup.settings.hostname)
        else:
            raise ConfigError(
                f"{setup.settings.config}: destinations.{name} is routed through SES; "
                "on one machine give it a mailbox host or {ses_endpoint: URL}"
            )
    return transports


def build_worker(setup: LocalSetup, mailbox_ports: dict[str, int]) -> Worker:
    dirs = setup.dirs
    clock = SystemClock()
    state = SqliteState(dirs.state_db)
    objects = FileObjectStore(dirs.objects)
    transports = mailbox_transports(setup, mailbox_ports)
    poster = SignedPoster(signing_keys(setup.routes, os.environ), clock)
    services = Services(
        objects=objects,
        timeline=state,
        idempotency=state,
        transports=destination_transports(setup, transports, os.environ),
        app_events=FileAppEvents(dirs.events),
        dead_letters=state,
        routes=setup.routes,
        clock=clock,
        gateway_host=setup.settings.hostname,
        deferrals=state,
        bounces=transports[setup.config.bounces] if setup.config.bounces else None,
        hooks=LocalHooks(setup.routes.hooks, poster, setup.config.routes.parent),
        webhooks=poster,
    )
    workflow = LocalWorkflow(setup.state_machine, services, setup.settings.retry_scale)
    mail_manager = LocalMailManager(
        config=setup.mail_manager,
        rule_set=setup.rule_set,
        book=FileAddressBook(dirs.address_lists),
        objects=objects,
        timeline=state,
        logs=VendedLogs(dirs.logs),
        clock=clock,
        relay_transports={relay: transports[host] for relay, host in setup.config.relays.items()},
        start_workflow=workflow.start,
        replace_mail_from=setup.replace_mail_from,
    )
    return Worker(setup, state, Spool(dirs.spool), mail_manager, workflow)


def write_ports(paths: Paths, ports: dict[str, int]) -> None:
    paths.ports_file.parent.mkdir(parents=True, exist_ok=True)
    paths.ports_file.write_text(json.dumps(ports, indent=2) + "\n", encoding="utf-8")
