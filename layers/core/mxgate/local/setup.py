"""What the one-machine runtime is configured to be, read once and checked: the settings
(environment), the local override file, the template's Mail Manager resources and state
machine, the routes file, and the directories under $MXGATE_HOME. No sockets, no threads:
`local/bootstrap.py` builds the runtime from this."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mxgate.errors import ConfigError
from mxgate.local.addons import check_addons
from mxgate.local.config import LocalConfig, load_config, unknown_port_variables
from mxgate.local.runfile import RUN_FILE
from mxgate.local.settings import LocalSettings, Paths, env_name
from mxgate.local.workflow import StateMachineSource, load_state_machine
from mxgate.mailmanager.models import IngressPoint, RuleSet, TrafficPolicy
from mxgate.mailmanager.resources import (
    MailManagerResources,
    accepted_domains,
    load_mail_manager,
)
from mxgate.mailmanager.template import (
    logical_id_of,
    parameter_values,
    read_samconfig_parameters,
    read_template,
    routes_parameters,
)
from mxgate.routing.routes import Routes, load_checked_routes

ParameterSource = tuple[str, Mapping[str, object]]  # (where the values come from, the values)


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
    mail_manager: MailManagerResources
    listeners: tuple[IngressSetup, ...]
    routes: Routes
    state_machine: StateMachineSource

    @property
    def dirs(self) -> Paths:
        return self.settings.paths

    @property
    def replace_mail_from(self) -> str:
        return self.config.replace_mail_from or f"postmaster@{self.routes.employee_domains[0]}"

    @property
    def primary(self) -> IngressSetup:
        """The ingress point `mxgate run` suggests and `mxgate demo` sends to: the first OPEN one."""
        return next((x for x in self.listeners if not x.auth), self.listeners[0])

    def rule_sets(self) -> dict[str, RuleSet]:
        return {listener.ingress_id: listener.rule_set for listener in self.listeners}


def local_parameter_sources(config: LocalConfig, config_path: Path) -> list[ParameterSource]:
    """Where this machine takes template parameter values from: samconfig.toml
    `parameter_overrides`, then local.yaml `parameters:` (later sources win)."""
    return [
        (str(config.samconfig), read_samconfig_parameters(config.samconfig)),
        (f"{config_path} parameters", config.parameters),
    ]


def template_parameters(template: Path, sources: Sequence[ParameterSource]) -> dict[str, str]:
    """The template's parameter values: its defaults, then each source in order, checked."""
    return parameter_values(read_template(template), sources)


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
    mail_manager: MailManagerResources, open_port: int, auth_port: int
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
    settings: LocalSettings,
    config: LocalConfig,
    config_path: Path,
    mail_manager: MailManagerResources,
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


def load_mail_manager_config(settings: LocalSettings) -> tuple[LocalConfig, MailManagerResources]:
    """The local configuration and the template's Mail Manager resources, checked."""
    config = load_config(settings)
    parameters = template_parameters(
        config.template, local_parameter_sources(config, settings.config)
    )
    return config, load_mail_manager(config.template, parameters)


def routes_of(config: LocalConfig, mail_manager: MailManagerResources) -> Routes:
    """The routes file with the template's parameters filled in, checked against the domains
    the template accepts and the relays it has."""
    return load_checked_routes(
        config.routes,
        routes_parameters(mail_manager.resolver),
        accepted_domains(mail_manager),
        mail_manager.relays,
    )


def load_setup(settings: LocalSettings) -> LocalSetup:
    config, mail_manager = load_mail_manager_config(settings)
    routes = routes_of(config, mail_manager)
    unmapped = sorted(set(routes.destinations) - set(config.destinations))
    if unmapped:
        raise ConfigError(
            f"{settings.config}: routes destinations {unmapped} have no local mailbox host "
            "under `destinations:`"
        )
    unknown = sorted(set(config.destinations) - set(routes.destinations))
    if unknown:
        raise ConfigError(f"{settings.config}: destinations {unknown} are not in the routes file")
    listeners = _listeners(settings, config, settings.config, mail_manager)
    check_addons(
        config,
        settings.config,
        {logical_id_of(x.ingress.TrafficPolicyId): x.traffic_policy for x in listeners},
        mail_manager.addon_instances,
    )
    return LocalSetup(
        settings=settings,
        config=config,
        mail_manager=mail_manager,
        listeners=listeners,
        routes=routes,
        state_machine=load_state_machine(config.template, mail_manager.resolver),
    )


def quarantine_days(mail_manager: MailManagerResources) -> int:
    """How long quarantined mail is kept: the template's RawMailRetentionDays (on AWS the raw
    bucket keeps the message that long, and the record expires with it)."""
    return int(mail_manager.resolver.values.get("RawMailRetentionDays", 30))


def archive_retentions(mail_manager: MailManagerResources) -> dict[str, str]:
    """Each archive's `Retention.RetentionPeriod` in the template (none given: PERMANENT)."""
    return {
        archive_id: str(
            getattr(archive.Retention.RetentionPeriod, "value", archive.Retention.RetentionPeriod)
        )
        if archive.Retention is not None
        else "PERMANENT"
        for archive_id, archive in mail_manager.archives.items()
    }


def state_paths(settings: LocalSettings) -> Paths:
    """The home of a gateway that has run, or a ConfigError saying where mxgate looked."""
    paths = settings.paths
    if paths.state_db.exists():
        return paths
    if settings.explicit("home"):
        raise ConfigError(f"no gateway state under {settings.home} (has `mxgate run` run there?)")
    raise ConfigError(
        f"no gateway is running from {Path.cwd()} (no live {RUN_FILE}) and the default home "
        f"{settings.home} holds no state: start one with `make run` here, or name a home with "
        "--home or MXGATE_HOME"
    )
