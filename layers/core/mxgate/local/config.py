"""The local override file: how the one-machine gateway stands in for AWS and for the
mailbox providers (config/local.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mxgate.errors import ConfigError
from mxgate.message.model import ParseLimits


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


class DnsConfig(Strict):
    """Where sender authentication asks DNS; no name servers means the system resolver."""

    nameservers: list[str] | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 53
    timeout: Annotated[float, Field(gt=0, le=30)] = 2.0


class LocalConfig(Strict):
    template: Path = Path("../template.yaml")
    samconfig: Path = Path("../samconfig.toml")
    routes: Path = Path("routes.yaml")
    ingress_point: str | None = None  # logical id; default: the template's only one
    parameters: dict[str, str] = Field(default_factory=dict)
    smtp: SmtpConfig = SmtpConfig()
    mailbox_hosts: dict[str, MailboxHost] = Field(default_factory=dict)
    relays: dict[str, str] = Field(default_factory=dict)  # relay logical id -> mailbox host
    destinations: dict[str, str] = Field(default_factory=dict)  # routes destination -> mailbox host
    address_lists: Path = Path("address-lists")  # under $MXGATE_HOME unless absolute
    dns: DnsConfig = DnsConfig()
    message_limits: ParseLimits = ParseLimits()

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
    unknown = sorted(set(config.relays.values()) | set(config.destinations.values()))
    missing = [host for host in unknown if host not in config.mailbox_hosts]
    if missing:
        raise ConfigError(f"{path}: relays/destinations name unknown mailbox hosts {missing}")
    return config.resolved(path.parent)
