"""The composition root of the one-machine runtime: reads the configuration once, builds the
adapters, and wires the ingress, the Mail Manager emulator, the workflow and the mailbox hosts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from mxgate.adapters.dns import DnsPythonResolver
from mxgate.adapters.local.appevents import FileAppEvents
from mxgate.adapters.local.objects import FileObjectStore
from mxgate.adapters.local.state import SqliteState
from mxgate.authn.check import Authenticator
from mxgate.authn.resolver import CachingResolver
from mxgate.clock import SystemClock
from mxgate.delivery.smtp import SmtpTarget, SmtpTransport
from mxgate.errors import ConfigError
from mxgate.local.addresslists import FileAddressBook
from mxgate.local.config import DnsConfig, LocalConfig, load_local_config
from mxgate.local.logs import VendedLogs
from mxgate.local.mailmanager import LocalMailManager
from mxgate.local.settings import LocalSettings
from mxgate.local.spool import Spool
from mxgate.local.workflow import LocalWorkflow, StateMachineSource, load_state_machine
from mxgate.mailmanager.config import MailManagerConfig, load_mail_manager
from mxgate.mailmanager.models import IngressPoint, RuleSet, TrafficPolicy
from mxgate.mailmanager.template import read_samconfig_parameters
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


def build_resolver(config: DnsConfig) -> CachingResolver:
    """DNS for sender authentication, cached for the records' TTLs."""
    return CachingResolver(DnsPythonResolver(config.nameservers, config.port, config.timeout))


def build_worker(setup: LocalSetup, mailbox_ports: dict[str, int]) -> Worker:
    dirs = setup.dirs
    clock = SystemClock()
    resolver = build_resolver(setup.config.dns)
    state = SqliteState(dirs.state_db)
    objects = FileObjectStore(dirs.objects)
    transports = mailbox_transports(setup, mailbox_ports)
    services = Services(
        objects=objects,
        timeline=state,
        idempotency=state,
        transports={dest: transports[host] for dest, host in setup.config.destinations.items()},
        app_events=FileAppEvents(dirs.events),
        dead_letters=state,
        routes=setup.routes,
        clock=clock,
        gateway_host=setup.settings.hostname,
        resolver=resolver,
        message_limits=setup.config.message_limits,
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
        authenticator=Authenticator(resolver, setup.settings.hostname),
    )
    return Worker(setup, state, Spool(dirs.spool), mail_manager, workflow)


def write_ports(paths: Paths, ports: dict[str, int]) -> None:
    paths.ports_file.parent.mkdir(parents=True, exist_ok=True)
    paths.ports_file.write_text(json.dumps(ports, indent=2) + "\n", encoding="utf-8")
