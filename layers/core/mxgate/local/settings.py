"""Typed settings of the local runtime, read once from the environment and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mxgate.errors import ConfigError

ENVIRONMENT = {
    "MXGATE_HOME": "home",
    "MXGATE_CONFIG": "config",
    "MXGATE_SMTP_HOST": "smtp_host",
    "MXGATE_SMTP_PORT": "smtp_port",
    "MXGATE_WORKERS": "workers",
    "MXGATE_HOSTNAME": "hostname",
    "MXGATE_LOG_LEVEL": "log_level",
    "MXGATE_RETRY_SCALE": "retry_scale",
    "MXGATE_DEFER_POLL": "defer_poll",
}


@dataclass(frozen=True)
class Paths:
    """Where the local runtime keeps its state, under $MXGATE_HOME."""

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


class LocalSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path = Field(
        default=Path(".mxgate"), description="state: spool, objects, mailboxes, logs"
    )
    config: Path = Field(default=Path("config/local.yaml"), description="the local override file")
    smtp_host: str = Field(default="127.0.0.1", description="SMTP ingress address")
    smtp_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="SMTP ingress port (default: local.yaml, else 2525)",
    )
    workers: int = Field(default=2, ge=1, le=64, description="workflow worker processes")
    hostname: str = Field(default="mxgate.local", description="the name the gateway greets with")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")
    retry_scale: float = Field(
        default=1.0, ge=0, le=1, description="multiplies the state machine's retry waits (tests)"
    )
    defer_poll: float = Field(
        default=5.0, gt=0, le=300, description="seconds between looks at the deferred queue"
    )

    @property
    def paths(self) -> Paths:
        return Paths(self.home.resolve())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LocalSettings:
        source = os.environ if environ is None else environ
        values = {field: source[name] for name, field in ENVIRONMENT.items() if source.get(name)}
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            by_field = {v: k for k, v in ENVIRONMENT.items()}
            problems = "; ".join(
                f"{by_field.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in error.errors()
            )
            raise ConfigError(f"environment: {problems}") from error
