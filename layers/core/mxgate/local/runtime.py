"""The composition root of the one-machine runtime: reads the configuration once, builds the
adapters, and wires the ingress, the Mail Manager emulator, the workflow and the mailbox hosts."""

from __future__ import annotations

import getpass
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from mxgate.adapters.dns import DnsPythonResolver
from mxgate.adapters.local.appevents import FileAppEvents
from mxgate.adapters.local.archive import SqliteArchive
from mxgate.adapters.local.hooks import LocalHooks
from mxgate.adapters.local.objects import FileObjectStore
from mxgate.adapters.local.quarantine import SqliteQuarantine
from mxgate.adapters.local.state import SqliteState
from mxgate.authn.check import Authenticator
from mxgate.authn.resolver import CachingResolver
from mxgate.clock import SystemClock
from mxgate.delivery.smtp import SmtpTarget, SmtpTransport, submission_or_deferral
from mxgate.delivery.webhook import SignedPoster, signing_keys
from mxgate.desk import Desk
from mxgate.errors import ConfigError
from mxgate.local.addresslists import FileAddressBook
from mxgate.local.config import (
    DnsConfig,
    LocalConfig,
    SesEndpoint,
    load_config,
    unknown_port_variables,
)
from mxgate.local.logs import VendedLogs
from mxgate.local.mailmanager import LocalMailManager, LocalTargets, is_loopback
from mxgate.local.runfile import RUN_FILE
from mxgate.local.settings import LocalSettings, env_name
from mxgate.local.spool import Spool
from mxgate.local.workflow import LocalWorkflow, StateMachineSource, load_state_machine
from mxgate.mailmanager.config import MailManagerConfig, load_mail_manager
from mxgate.mailmanager.models import IngressPoint, RuleSet, TrafficPolicy
from mxgate.mailmanager.template import (
    parameter_values,
    read_samconfig_parameters,
    read_template,
)
from mxgate.observability import ERROR_LOG
from mxgate.ports import Clock, Transport
from mxgate.routing.config import Routes, load_routes
from mxgate.workflow.quarantine import purge as purge_quarantine
from mxgate.workflow.services import Services


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
    def error_log(self) -> Path:
        return self.logs / ERROR_LOG

    @property
    def state_db(self) -> Path:
        return self.home / "state.db"

    @property
    def archive_db(self) -> Path:
        """The archive's index (the archived copies are objects under mxgate-archive/)."""
        return self.home / "archive.db"

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
class IngressSetup:
    """One of the template's ingress points, as it listens on this machine."""

    ingress_id: str  # logical id: the local IngressPointId, and the AUTH user name
    ingress: IngressPoint
    traffic_policy: TrafficPolicy
    rule_set: RuleSet
    port: int
    smtp_password: str | None = None  # AUTH ingress points only

    @property
    def auth(self) -> bool:
        return self.ingress.Type == "AUTH"

    @property
    def max_message_size(self) -> int:
        return self.traffic_policy.max_message_size


@dataclass(frozen=True)
class LocalSetup:
    """Everything the configuration says, validated; no sockets, no threads."""

    settings: LocalSettings
    config: LocalConfig
    mail_manager: MailManagerConfig
    listeners: tuple[IngressSetup, ...]
    routes: Routes
    state_machine: StateMachineSource

    @cached_property
    def dirs(self) -> Paths:
        return Paths(self.settings.home.resolve())

    @property
    def replace_mail_from(self) -> str:
        return self.config.replace_mail_from or f"postmaster@{self.routes.employee_domains[0]}"

    @property
    def primary(self) -> IngressSetup:
        """The ingress point `mxgate run` suggests and `mxgate demo` sends to: the first OPEN one."""
        return next((x for x in self.listeners if not x.auth), self.listeners[0])

    def rule_sets(self) -> dict[str, RuleSet]:
        return {listener.ingress_id: listener.rule_set for listener in self.listeners}


def load_parameters(config: LocalConfig, config_path: Path) -> dict[str, str]:
    """samconfig.toml `parameter_overrides`, then local.yaml `parameters:` (these win)."""
    document = read_template(config.template)
    return parameter_values(
        document,
        [
            (str(config.samconfig), read_samconfig_parameters(config.samconfig)),
            (f"{config_path} parameters", config.parameters),
        ],
    )


def _smtp_password(
    config: LocalConfig, config_path: Path, ingress_id: str, point: IngressPoint
) -> str:
    settings = point.IngressPointConfiguration
    if settings is not None and settings.SmtpPassword is not None:
        return settings.SmtpPassword
    if settings is not None and settings.SecretArn is not None:
        secret = config.secret(settings.SecretArn) or {}
        if "password" not in secret:
            name = settings.SecretArn.rsplit(":secret:", 1)[-1]
            raise ConfigError(
                f"{config_path}: AUTH ingress point {ingress_id} takes its password from the "
                f"secret {settings.SecretArn}; give it locally under `secrets:`, e.g. "
                f"`{name}: {{password: ...}}`"
            )
        return secret["password"]
    raise ConfigError(
        f"{ingress_id}: an AUTH ingress point needs IngressPointConfiguration SmtpPassword or "
        "SecretArn"
    )


def _default_ports(
    mail_manager: MailManagerConfig, open_port: int, auth_port: int
) -> dict[str, int]:
    """OPEN ingress points on `open_port`, AUTH ones on `auth_port` and, when there are
    several, the ports after it (a free port each when the port is 0). MTLS ingress points
    are not emulated."""
    ports: dict[str, int] = {}
    auth = 0
    for name, point in mail_manager.ingress_points.items():
        if point.Type == "OPEN":
            ports[name] = open_port
        elif point.Type == "AUTH":
            ports[name] = auth_port + auth if auth_port else 0
            auth += 1
    return ports


def _listeners(
    settings: LocalSettings, config: LocalConfig, config_path: Path, mail_manager: MailManagerConfig
) -> tuple[IngressSetup, ...]:
    by_type = {"OPEN": config.smtp.port, "AUTH": config.smtp.auth_port}
    if config.ingress_points is not None:
        ports = {name: spec.port for name, spec in config.ingress_points.items()}
        for name in ports:
            mail_manager.ingress_point(name)  # names one of the template's, or says which exist
        # MXGATE_SMTP_PORT (--port) moves the first OPEN one listed, MXGATE_SMTP_AUTH_PORT the
        # first AUTH one
        for kind, moved in (("OPEN", settings.smtp_port), ("AUTH", settings.smtp_auth_port)):
            first = next((n for n in ports if mail_manager.ingress_points[n].Type == kind), None)
            if moved is not None and first is not None:
                ports[first] = moved
    else:
        ports = _default_ports(mail_manager, by_type["OPEN"], by_type["AUTH"])
    unknown_port_variables(settings, "ingress_ports", list(ports))
    ports |= {
        name: settings.ingress_ports[env_name(name)]
        for name in ports
        if env_name(name) in settings.ingress_ports
    }
    listening: dict[int, str] = {}
    listeners = []
    for name, port in ports.items():
        if port and port in listening:
            raise ConfigError(
                f"{config_path}: ingress points {listening[port]} and {name} would both listen "
                f"on port {port}: give each a port under `ingress_points:`"
            )
        listening[port] = name
        point = mail_manager.ingress_points[name]
        if point.Type == "MTLS":
            raise ConfigError(f"{config_path}: ingress point {name} is MTLS, not emulated locally")
        listeners.append(
            IngressSetup(
                ingress_id=name,
                ingress=point,
                traffic_policy=mail_manager.traffic_policy(point),
                rule_set=mail_manager.rule_set(point),
                port=port,
                smtp_password=(
                    _smtp_password(config, config_path, name, point)
                    if point.Type == "AUTH"
                    else None
                ),
            )
        )
    if not listeners:
        raise ConfigError(f"{config.template}: no OPEN or AUTH ingress point to run")
    return tuple(listeners)


def load_mail_manager_config(settings: LocalSettings) -> tuple[LocalConfig, MailManagerConfig]:
    """The local configuration and the template's Mail Manager resources, checked."""
    config = load_config(settings)
    return config, load_mail_manager(config.template, load_parameters(config, settings.config))


def load_setup(settings: LocalSettings) -> LocalSetup:
    config, mail_manager = load_mail_manager_config(settings)
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
        listeners=_listeners(settings, config, settings.config, mail_manager),
        routes=routes,
        state_machine=load_state_machine(config.template, mail_manager.resolver),
    )


def mailbox_transports(setup: LocalSetup, ports: dict[str, int]) -> dict[str, SmtpTransport]:
    return {
        host: SmtpTransport(SmtpTarget("127.0.0.1", port, helo=setup.settings.hostname))
        for host, port in ports.items()
    }


def relay_transports(setup: LocalSetup, mailbox: Mapping[str, Transport]) -> dict[str, Transport]:
    """Each of the template's relays, on this machine: the mailbox host `relays:` maps it to,
    else its own ServerName:ServerPort when that is loopback. Others are left out, and a Relay
    action to them fails with a message that says so."""
    found: dict[str, Transport] = {}
    for relay_id, relay in setup.mail_manager.relays.items():
        host = setup.config.relays.get(relay_id)
        if host is not None:
            found[relay_id] = mailbox[host]
        elif is_loopback(relay.ServerName):
            username = password = None
            if relay.Authentication.SecretArn is not None:
                secret = setup.config.secret(relay.Authentication.SecretArn) or {}
                if not {"username", "password"} <= set(secret):
                    raise ConfigError(
                        f"{setup.settings.config}: relay {relay_id} authenticates with the secret "
                        f"{relay.Authentication.SecretArn}; give its username and password under "
                        "`secrets:`"
                    )
                username, password = secret["username"], secret["password"]
            found[relay_id] = SmtpTransport(
                SmtpTarget(
                    relay.ServerName,
                    relay.ServerPort,
                    starttls=username is not None,  # never send a password in the clear
                    verify_tls=False,  # a local test server's certificate is self-signed
                    username=username,
                    password=password,
                    helo=setup.settings.hostname,
                )
            )
    return found


@dataclass
class Worker:
    """What one worker process needs to take a spooled message through to its end."""

    setup: LocalSetup
    state: SqliteState
    spool: Spool
    mail_manager: LocalMailManager
    workflow: LocalWorkflow
    transports: dict[str, SmtpTransport]

    def close(self) -> None:
        """Say QUIT to the mailbox hosts and close the database."""
        for transport in self.transports.values():
            transport.close()
        self.state.close()


def build_resolver(config: DnsConfig) -> CachingResolver:
    """DNS for sender authentication, cached for the records' TTLs."""
    return CachingResolver(DnsPythonResolver(config.nameservers, config.port, config.timeout))


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
            through = "SES" if destination.transport == "ses" else "the relay ingress point"
            raise ConfigError(
                f"{setup.settings.config}: destinations.{name} is routed through {through}; "
                "on one machine give it a mailbox host or {ses_endpoint: URL} "
                "(`mxgate sandbox` runs the AWS path)"
            )
    return transports


def build_worker(setup: LocalSetup, mailbox_ports: dict[str, int]) -> Worker:
    dirs = setup.dirs
    clock = SystemClock()
    resolver = build_resolver(setup.config.dns)
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
        resolver=resolver,
        message_limits=setup.config.message_limits,
        deferrals=state,
        bounces=transports[setup.config.outbound] if setup.config.outbound else None,
        hooks=LocalHooks(setup.routes.hooks, poster, setup.config.routes.parent),
        webhooks=poster,
        quarantine=SqliteQuarantine(state),
        quarantine_days=quarantine_days(setup.mail_manager),
    )
    workflow = LocalWorkflow(setup.state_machine, services, setup.settings.retry_scale)
    outbound = setup.config.outbound
    mail_manager = LocalMailManager(
        config=setup.mail_manager,
        rule_sets=setup.rule_sets(),
        book=FileAddressBook(dirs.address_lists),
        objects=objects,
        timeline=state,
        idempotency=state,
        dead_letters=state,
        deferrals=state,
        retry_policy=setup.routes.delivery,
        logs=VendedLogs(dirs.logs),
        clock=clock,
        targets=LocalTargets(
            home=dirs.home,
            hostname=setup.settings.hostname,
            relays=relay_transports(setup, transports),
            outbound=transports[outbound] if outbound is not None else None,
            replace_mail_from=setup.replace_mail_from,
        ),
        start_workflow=workflow.start,
        authenticator=Authenticator(resolver, setup.settings.hostname),
        archive=SqliteArchive(dirs.archive_db, objects),
    )
    return Worker(setup, state, Spool(dirs.spool), mail_manager, workflow, transports)


def quarantine_days(mail_manager: MailManagerConfig) -> int:
    """How long quarantined mail is kept: the template's RawMailRetentionDays (on AWS the raw
    bucket keeps the message that long, and the record expires with it)."""
    return int(mail_manager.resolver.values.get("RawMailRetentionDays", 30))


def archive_retentions(mail_manager: MailManagerConfig) -> dict[str, str]:
    """Each archive's `Retention.RetentionPeriod` in the template (none given: PERMANENT)."""
    return {
        archive_id: str(
            getattr(archive.Retention.RetentionPeriod, "value", archive.Retention.RetentionPeriod)
        )
        if archive.Retention is not None
        else "PERMANENT"
        for archive_id, archive in mail_manager.archives.items()
    }


def enforce_retention(setup: LocalSetup, clock: Clock) -> dict[str, int]:
    """Delete archived messages past their archive's Retention and quarantined ones past the
    quarantine's; how many of each went."""
    dirs = setup.dirs
    objects = FileObjectStore(dirs.objects)
    archive = SqliteArchive(dirs.archive_db, objects)
    state = SqliteState(dirs.state_db)
    try:
        archived = archive.purge(archive_retentions(setup.mail_manager), clock.now())
        held = purge_quarantine(SqliteQuarantine(state), state, clock, objects.delete)
    finally:
        archive.close()
        state.close()
    return {"archived": len(archived), "quarantined": len(held)}


def state_paths(settings: LocalSettings) -> Paths:
    """The home of a gateway that has run, or a ConfigError saying where mxgate looked."""
    paths = Paths(settings.home.resolve())
    if paths.state_db.exists():
        return paths
    if settings.explicit("home"):
        raise ConfigError(f"no gateway state under {settings.home} (has `mxgate run` run there?)")
    raise ConfigError(
        f"no gateway is running from {Path.cwd()} (no live {RUN_FILE}) and the default home "
        f"{settings.home} holds no state: start one with `make run` here, or name a home with "
        "--home or MXGATE_HOME"
    )


def local_desk(settings: LocalSettings) -> Desk:
    """What `mxgate quarantine|archive|dlq|console` act on here: the gateway's state under
    its home, whether or not the gateway runs now."""
    paths = state_paths(settings)
    config = load_config(settings)
    state = SqliteState(paths.state_db)
    objects = FileObjectStore(paths.objects)
    running = paths.ports_file.exists()
    return Desk(
        timeline=state,
        messages=state,
        dead_letters=state,
        deferrals=state,
        quarantine=SqliteQuarantine(state),
        archive=SqliteArchive(paths.archive_db, objects),
        objects=objects,
        routes=load_routes(config.routes),
        clock=SystemClock(),
        actor=f"{getpass.getuser()}@{socket.gethostname()}",
        where=str(paths.home),
        after_queue=(
            f"the running gateway delivers it within {settings.defer_poll:g}s"
            if running
            else "the gateway delivers it when it next runs (`mxgate run`)"
        ),
        delete_object=objects.delete,
        mailboxes=paths.mailboxes,
    )


def write_ports(paths: Paths, ports: dict[str, int]) -> None:
    """Whole or not at all: whoever waits for the file never reads half of it."""
    paths.ports_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = paths.ports_file.with_suffix(".tmp")
    temporary.write_text(json.dumps(ports, indent=2) + "\n", encoding="utf-8")
    temporary.replace(paths.ports_file)
