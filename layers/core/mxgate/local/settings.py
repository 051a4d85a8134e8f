"""Typed settings of the local runtime, read once from the environment and passed down.

Every port the gateway listens on and every path it reads can be set here, so a second
gateway (or a test) never needs a copy of `config/local.yaml`: fixed variables below, plus
`MXGATE_MAILBOX_<HOST>_PORT` for each mailbox host and `MXGATE_INGRESS_<ID>_PORT` for each
ingress point (the name upper-cased, `-` and `.` as `_`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mxgate.errors import ConfigError
from mxgate.observability import ERROR_LOG

ENVIRONMENT = {
    "MXGATE_HOME": "home",
    "MXGATE_CONFIG": "config",
    "MXGATE_TEMPLATE": "template",
    "MXGATE_SAMCONFIG": "samconfig",
    "MXGATE_ROUTES_FILE": "routes",
    "MXGATE_SMTP_HOST": "smtp_host",
    "MXGATE_SMTP_PORT": "smtp_port",
    "MXGATE_SMTP_AUTH_PORT": "smtp_auth_port",
    "MXGATE_WORKERS": "workers",
    "MXGATE_HOSTNAME": "hostname",
    "MXGATE_LOG_LEVEL": "log_level",
    "MXGATE_LATENCY_LOG": "latency_log",
    "MXGATE_RETRY_SCALE": "retry_scale",
    "MXGATE_DEFER_POLL": "defer_poll",
}
# One variable per named listener, `{}` standing for its name as env_name spells it.
NAMED_PORTS = {
    "mailbox_ports": "MXGATE_MAILBOX_{}_PORT",
    "ingress_ports": "MXGATE_INGRESS_{}_PORT",
}

PortNumber = Annotated[int, Field(ge=0, le=65535)]  # 0: a free one


def env_name(name: str) -> str:
    """A mailbox host's or ingress point's name as it appears in its variable."""
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def named_port_variable(kind: str, name: str) -> str:
    """The variable that sets the port of the listener `name` (kind: a NAMED_PORTS key)."""
    return NAMED_PORTS[kind].format(env_name(name))


def _named_ports(source: Mapping[str, str], kind: str) -> dict[str, str]:
    prefix, suffix = NAMED_PORTS[kind].split("{}")
    return {
        variable[len(prefix) : -len(suffix)]: value
        for variable, value in source.items()
        if value
        and variable.startswith(prefix)
        and variable.endswith(suffix)
        and len(variable) > len(prefix) + len(suffix)
    }


@dataclass(frozen=True)
class Paths:
    """Where the local runtime keeps its state, under $MXGATE_HOME."""

    home: Path

    @property
    def spool(self) -> Path:
        return self.home / "spool"

    @property
    def history(self) -> Path:
        """Accepted messages as received, for `mxgate rules replay` (local/history.py)."""
        return self.home / "history"

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
    def address_lists(self) -> Path:
        return self.home / "address-lists"

    @property
    def ports_file(self) -> Path:
        return self.home / "run" / "ports.json"


class LocalSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path = Field(
        default=Path(".mxgate"), description="state: spool, objects, mailboxes, logs"
    )
    config: Path = Field(default=Path("config/local.yaml"), description="the local override file")
    template: Path | None = Field(default=None, description="instead of local.yaml's template")
    samconfig: Path | None = Field(default=None, description="instead of local.yaml's samconfig")
    routes: Path | None = Field(default=None, description="instead of local.yaml's routes")
    smtp_host: str | None = Field(default=None, description="SMTP ingress address")
    smtp_port: int | None = Field(
        default=None, ge=0, le=65535, description="OPEN ingress points (default: local.yaml)"
    )
    smtp_auth_port: int | None = Field(
        default=None, ge=0, le=65535, description="AUTH ingress points (default: local.yaml)"
    )
    # by the name's environment spelling (env_name): WORKSPACE, SUBMISSIONINGRESSPOINT
    mailbox_ports: dict[str, PortNumber] = Field(default_factory=dict)
    ingress_ports: dict[str, PortNumber] = Field(default_factory=dict)
    workers: int = Field(
        default_factory=lambda: min(64, os.cpu_count() or 2),
        ge=1,
        le=64,
        description="workflow worker processes (default: one a core)",
    )
    hostname: str = Field(default="mxgate.local", description="the name the gateway greets with")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")
    latency_log: bool = Field(
        default=False, description="log each message's hops to its worker (bench/latency_hops.py)"
    )
    retry_scale: float = Field(
        default=1.0, ge=0, le=1, description="multiplies the state machine's retry waits (tests)"
    )
    defer_poll: float = Field(
        default=5.0, gt=0, le=300, description="seconds between looks at the deferred queue"
    )

    @property
    def paths(self) -> Paths:
        """Under the home, resolved once (a resolve is a system call a component, and the paths
        are read per message)."""
        home, paths = self.resolved_home
        if home is not self.home:  # a model_copy with another home copied the memo along
            self.__dict__["resolved_home"] = home, paths = self.home, Paths(self.home.resolve())
        return paths

    @cached_property
    def resolved_home(self) -> tuple[Path, Paths]:
        return self.home, Paths(self.home.resolve())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LocalSettings:
        source = os.environ if environ is None else environ
        values: dict[str, object] = {
            field: source[name] for name, field in ENVIRONMENT.items() if source.get(name)
        }
        for kind in NAMED_PORTS:
            named = _named_ports(source, kind)
            if named:
                values[kind] = named
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            variables = {field: name for name, field in ENVIRONMENT.items()}
            problems = []
            for e in error.errors():
                field, *rest = (str(part) for part in e["loc"])
                variable = (
                    NAMED_PORTS[field].format(rest[0])
                    if field in NAMED_PORTS and rest
                    else variables.get(field, field)
                )
                problems.append(f"{variable}: {e['msg']}")
            raise ConfigError(f"environment: {'; '.join(problems)}") from error

    def explicit(self, field: str) -> bool:
        """Whether `field` was given (environment or option) rather than left at its default."""
        return field in self.model_fields_set
