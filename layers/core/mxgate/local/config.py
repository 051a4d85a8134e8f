"""The local override file: how the one-machine gateway stands in for AWS and for the
mailbox providers (config/local.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mxgate.errors import ConfigError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MailboxHost(Strict):
    """A local SMTP server standing in for Google Workspace or Microsoft 365."""

    port: Annotated[int, Field(ge=0, le=65535)]
    description: str = ""


class SmtpConfig(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 2525
    auth_port: Annotated[int, Field(ge=0, le=65535)] = 2587  # AUTH ingress points listen here


class SesEndpoint(Strict):
    """SES sending at a given endpoint (a moto server, a test double) instead of a stand-in."""

    ses_endpoint: Annotated[str, Field(pattern=r"^https?://")]
    region: str = "us-east-1"


class AsRouted(Strict):
    """Leave as the routes file says (SMTP submission to its host, e.g. one on loopback)."""

    as_routed: Literal[True]


LocalDestination = str | SesEndpoint | AsRouted  # a string names a local mailbox host


class LocalConfig(Strict):
    template: Path = Path("../template.yaml")
    samconfig: Path = Path("../samconfig.toml")
    routes: Path = Path("routes.yaml")
    ingress_point: str | None = None  # logical id; default: the template's only one
    parameters: dict[str, str] = Field(default_factory=dict)
    smtp: SmtpConfig = SmtpConfig()
    mailbox_hosts: dict[str, MailboxHost] = Field(default_factory=dict)
    relays: dict[str, str] = Field(default_factory=dict)  # relay logical id -> mailbox host
    # routes destination -> a local mailbox host (a name), an SES endpoint, or {as_routed: true}
    destinations: dict[str, LocalDestination] = Field(default_factory=dict)
    bounces: str | None = None  # the mailbox host DSNs to envelope senders go to
    address_lists: Path = Path("address-lists")  # under $MXGATE_HOME unless absolute

    def resolved(self, base: Path) -> LocalConfig:
        """Paths in the file are relative to the file's own directory."""
        return self.model_copy(
            update={
                "template": (base / self.template).resolve(),
                "samconfig": (base / self.samconfig).resolve(),
                "routes": (base / self.routes).resolve(),
            }
        )


def load_local_config(path: Path) -> LocalConfig:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise ConfigError(
            f"{path}: cannot read the local configuration: {error.strerror}"
        ) from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    try:
        config = LocalConfig.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(
            ".".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in error.errors()
        )
        raise ConfigError(f"{path}: {problems}") from error
    unknown = sorted(
        {*config.relays.values(), *(d for d in config.destinations.values() if isinstance(d, str))}
        | ({config.bounces} if config.bounces else set())
    )
    missing = [host for host in unknown if host not in config.mailbox_hosts]
    if missing:
        raise ConfigError(
            f"{path}: relays/destinations/bounces name unknown mailbox hosts {missing}"
        )
    return config.resolved(path.parent)
