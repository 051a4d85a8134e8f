"""The local override file: how the one-machine gateway stands in for AWS and for the
mailbox providers (config/local.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mxgate.config_files import Problem, load_model, suggestion
from mxgate.message.model import ParseLimits
from mxgate.routing.config import Duration


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
    template: Path = Path("../template.yaml")
    samconfig: Path = Path("../samconfig.toml")
    routes: Path = Path("routes.yaml")
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

    def resolved(self, base: Path) -> LocalConfig:
        """Paths in the file are relative to the file's own directory."""
        return self.model_copy(
            update={
                "template": (base / self.template).resolve(),
                "samconfig": (base / self.samconfig).resolve(),
                "routes": (base / self.routes).resolve(),
            }
        )


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


def load_local_config(path: Path) -> LocalConfig:
    """The local configuration, validated: every problem at once (ConfigFileError), placed."""
    config = load_model(
        path, LocalConfig, "the local configuration", references=mailbox_host_problems
    )
    return config.resolved(path.parent)
