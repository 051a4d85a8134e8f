"""The local override file: how the one-machine gateway stands in for AWS and for the
mailbox providers (config/local.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mxgate.config_files import Problem, load_model, suggestion
from mxgate.errors import ConfigError
from mxgate.local.limits import SmtpLimits
from mxgate.local.settings import LocalSettings, env_name, named_port_variable
from mxgate.message.model import ParseLimits
from mxgate.routing.routes import Duration


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MailboxHost(Strict):
    """A local SMTP server standing in for Google Workspace or Microsoft 365.

    `external: true` means something else already listens on 127.0.0.1:port (a Postfix,
    Dovecot or smtp-sink of yours): the gateway delivers there and starts no server.
    """

    port: Annotated[int, Field(ge=0, le=65535)]
    description: str = ""
    external: bool = False

    @model_validator(mode="after")
    def _external_needs_a_port(self) -> Self:
        if self.external and self.port == 0:
            raise ValueError("an external mailbox host needs its real port, not 0")
        return self


class SmtpConfig(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 2525
    auth_port: Annotated[int, Field(ge=0, le=65535)] = 2587  # AUTH ingress points listen here
    limits: SmtpLimits = SmtpLimits()  # connections, timeouts, AUTH failures


class IngressListener(Strict):
    """Where one of the template's ingress points listens on this machine."""

    port: Annotated[int, Field(ge=0, le=65535)]


class DnsConfig(Strict):
    """Where sender authentication asks DNS; no name servers means the system resolver."""

    nameservers: list[str] | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 53
    timeout: Annotated[float, Field(gt=0, le=30)] = 2.0


_RESULT_FIELD = r"^(addon\.)?[\sa-zA-Z0-9_]+$"  # the botocore model's pattern


class DnsblConfig(Strict):
    """A DNS blocklist (RFC 5782) that stands in for an add-on instance of the template."""

    zone: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+\.?$")]
    nameservers: list[str] | None = None  # default: those of `dns:` (or the system's)
    port: Annotated[int | None, Field(ge=1, le=65535)] = None  # default: that of `dns:`
    # The longest an SMTP session waits for the answer, in seconds.
    timeout: Annotated[float, Field(gt=0, le=10)] = 1.0
    # open: a lookup that fails counts as "not listed" and the session goes on;
    # closed: the recipient gets 451 4.7.1 and the sender tries again later.
    on_lookup_failure: Literal["open", "closed"] = "open"
    codes: dict[str, str] = Field(default_factory=dict)  # answer ("127.0.0.2") -> a list's name
    # The ResultField names the template's conditions use for "listed" (a BooleanExpression)
    # and for the listings' names (a StringExpression): the real add-on's names, if it has them.
    listed_field: Annotated[str, Field(pattern=_RESULT_FIELD)] = "addon.listed"
    listings_field: Annotated[str, Field(pattern=_RESULT_FIELD)] = "addon.listings"


class AddonBinding(Strict):
    """What one `AWS::SES::MailManagerAddonInstance` of the template is on this machine."""

    dnsbl: DnsblConfig


class SesEndpoint(Strict):
    """SES sending at a given endpoint (a moto server, a test double) instead of a stand-in."""

    ses_endpoint: Annotated[str, Field(pattern=r"^https?://")]
    region: str = "us-east-1"


class AsRouted(Strict):
    """Leave as the routes file says (SMTP submission to its host, e.g. one on loopback)."""

    as_routed: Literal[True]


LocalDestination = str | SesEndpoint | AsRouted  # a string names a local mailbox host


class HistoryConfig(Strict):
    """How long accepted messages are kept, as received, for `mxgate rules replay`."""

    keep: Duration = 7 * 86400.0  # 0: keep none


class LocalConfig(Strict):
    # relative to the project directory (the working directory), wherever the file is
    template: Path = Path("template.yaml")
    samconfig: Path = Path("samconfig.toml")
    routes: Path = Path("config/routes.yaml")
    # Template parameter values; YAML scalars are taken as CloudFormation would (true -> "true").
    parameters: dict[str, str | int | float | bool] = Field(default_factory=dict)
    smtp: SmtpConfig = SmtpConfig()
    # Ingress point logical id -> port. Unset: every OPEN ingress point of the template listens
    # on smtp.port and every AUTH one on smtp.auth_port.
    ingress_points: dict[str, IngressListener] | None = None
    mailbox_hosts: dict[str, MailboxHost] = Field(default_factory=dict)
    relays: dict[str, str] = Field(default_factory=dict)  # relay logical id -> mailbox host
    # routes destination -> a local mailbox host (a name), an SES endpoint, or {as_routed: true}
    destinations: dict[str, LocalDestination] = Field(default_factory=dict)
    # The mailbox host that stands in for the internet: where Send and Bounce deliver.
    outbound: str | None = None
    # The envelope sender of Relay actions with MailFrom REPLACE (default postmaster@ the first
    # employee domain).
    replace_mail_from: str | None = None
    # Secrets Manager secrets the template names (SecretArn, or the secret's name) -> their
    # key/value pairs: `password` for AUTH ingress points, `username` + `password` for relays.
    secrets: dict[str, dict[str, str]] = Field(default_factory=dict)
    dns: DnsConfig = DnsConfig()
    # Add-on instances of the template (logical id) -> what answers for them here.
    addons: dict[str, AddonBinding] = Field(default_factory=dict)
    history: HistoryConfig = HistoryConfig()
    message_limits: ParseLimits = ParseLimits()

    def secret(self, arn: str) -> dict[str, str] | None:
        """A secret's values, found by its ARN or by its name (the ARN's last part)."""
        if arn in self.secrets:
            return self.secrets[arn]
        name = arn.rsplit(":secret:", 1)[-1]
        return self.secrets.get(name)

    def resolved(self, project: Path) -> LocalConfig:
        """Relative paths are taken from the project directory, wherever the file lives."""
        return self.model_copy(
            update={
                "template": (project / self.template).resolve(),
                "samconfig": (project / self.samconfig).resolve(),
                "routes": (project / self.routes).resolve(),
            }
        )

    def overridden(self, settings: LocalSettings) -> LocalConfig:
        """The file's values with what the environment (or an option) set instead."""
        paths = {
            field: value.resolve()  # relative: to the working directory, as the file's are
            for field in ("template", "samconfig", "routes")
            if (value := getattr(settings, field)) is not None
        }
        smtp = {
            field: value
            for field, value in (
                ("host", settings.smtp_host),
                ("port", settings.smtp_port),
                ("auth_port", settings.smtp_auth_port),
            )
            if value is not None
        }
        unknown_port_variables(settings, "mailbox_ports", list(self.mailbox_hosts))
        mailbox_hosts = dict(self.mailbox_hosts)
        for name, host in self.mailbox_hosts.items():
            port = settings.mailbox_ports.get(env_name(name))
            if port is None:
                continue
            try:  # validated again: an external host needs its real port
                mailbox_hosts[name] = MailboxHost.model_validate(
                    {**host.model_dump(), "port": port}
                )
            except ValidationError as error:
                problem = "; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())
                variable = named_port_variable("mailbox_ports", name)
                raise ConfigError(f"environment: {variable}: {problem}") from error
        return self.model_copy(
            update={
                **paths,
                "smtp": self.smtp.model_copy(update=smtp),
                "mailbox_hosts": mailbox_hosts,
            }
        )


_LISTENERS = {"mailbox_ports": "mailbox host", "ingress_ports": "ingress point"}


def unknown_port_variables(settings: LocalSettings, kind: str, names: list[str]) -> None:
    """ConfigError for a MXGATE_MAILBOX_<HOST>_PORT (or ingress) variable that names nothing."""
    known = {named_port_variable(kind, name): name for name in names}
    given = getattr(settings, kind)
    problems = [
        f"{variable}: no {_LISTENERS[kind]} {name.lower()!r} to move"
        f"{suggestion(variable, known)} (there are: {', '.join(names) or 'none'})"
        for name in sorted(given)
        if (variable := named_port_variable(kind, name)) not in known
    ]
    if problems:
        raise ConfigError("environment: " + "; ".join(problems))


def mailbox_host_problems(document: object) -> list[Problem]:
    """Relays, destinations and `outbound` naming a mailbox host the file does not define."""
    root = document if isinstance(document, dict) else {}
    hosts = root.get("mailbox_hosts")
    known = [str(h) for h in hosts] if isinstance(hosts, dict) else []
    named: list[tuple[str, object]] = [("outbound", root.get("outbound"))]
    for section in ("relays", "destinations"):
        entries = root.get(section)
        if isinstance(entries, dict):
            named += [(f"{section}.{key}", value) for key, value in entries.items()]
    return [
        Problem(
            place,
            f"no mailbox host {host!r}{suggestion(host, known)} "
            f"(mailbox_hosts: {', '.join(sorted(known)) or 'none'})",
        )
        for place, host in named
        if isinstance(host, str) and host not in known
    ]


def load_local_config(path: Path, project: Path | None = None) -> LocalConfig:
    """The local configuration, validated: every problem at once (ConfigFileError), placed.
    Its relative paths are taken from `project` (default: the working directory)."""
    config = load_model(
        path, LocalConfig, "the local configuration", references=mailbox_host_problems
    )
    return config.resolved(Path.cwd() if project is None else project)


_PATH_VARIABLES = {"template": "MXGATE_TEMPLATE", "routes": "MXGATE_ROUTES_FILE"}


def load_config(settings: LocalSettings) -> LocalConfig:
    """The configuration the gateway and every command use: the file, then the environment.
    A file that is not there is named with where its relative paths were taken from."""
    if not settings.config.is_file():
        raise ConfigError(
            f"{settings.config}: no local configuration there (relative to {Path.cwd()}): run "
            "mxgate from the project directory, or name the file with --config or MXGATE_CONFIG"
        )
    config = load_local_config(settings.config).overridden(settings)
    for field, variable in _PATH_VARIABLES.items():
        path: Path = getattr(config, field)
        if not path.is_file():
            raise ConfigError(
                f"{settings.config}: {field}: {path} does not exist (relative paths are taken "
                f"from the project directory, {Path.cwd()}): run mxgate there, or give an "
                f"absolute path, or set {variable}"
            )
    return config
