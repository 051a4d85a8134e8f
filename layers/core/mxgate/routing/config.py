"""The routes file: one validated document shared by both runtimes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mxgate.errors import ConfigError

Domain = Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Directory(Strict):
    """Which mailbox host each employee lives on; everyone else goes to `default`."""

    default: str
    users: dict[str, str] = Field(default_factory=dict)

    def host_for(self, address: str) -> str:
        return self.users.get(address.casefold(), self.default)


class App(Strict):
    """An application that owns addresses on an application domain."""

    addresses: Annotated[list[str], Field(min_length=1)]
    description: str = ""


class Destination(Strict):
    """A mailbox host: how mail for it leaves the gateway on AWS."""

    description: str = ""
    transport: Literal["ses", "smtp"] = "ses"
    # SES: the recipient's domain is replaced by this routing domain
    # (Workspace: <domain>.test-google-a.com; Microsoft 365: <tenant>.mail.onmicrosoft.com).
    routing_domain: str | None = None
    host: str | None = None
    port: int = 587


class Routes(Strict):
    employee_domains: Annotated[list[Domain], Field(min_length=1)]
    app_domains: list[Domain] = Field(default_factory=list)
    directory: Directory
    destinations: dict[str, Destination]
    apps: dict[str, App] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        hosts = {self.directory.default, *self.directory.users.values()}
        missing = sorted(hosts - set(self.destinations))
        if missing:
            raise ValueError(f"directory names mailbox hosts with no destination: {missing}")
        lowered = {k.casefold() for k in self.directory.users}
        if len(lowered) != len(self.directory.users):
            raise ValueError("directory.users lists an address twice (addresses ignore case)")
        owners: dict[str, str] = {}
        for name, app in self.apps.items():
            for address in app.addresses:
                domain = address.rpartition("@")[2].casefold()
                if domain not in {d.casefold() for d in self.app_domains}:
                    raise ValueError(f"apps.{name}: {address} is not on an application domain")
                if address.casefold() in owners:
                    raise ValueError(
                        f"{address} is owned by both {owners[address.casefold()]} and {name}"
                    )
                owners[address.casefold()] = name
        return self


def load_routes(path: Path) -> Routes:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read routes: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    try:
        routes = Routes.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(
            ".".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in error.errors()
        )
        raise ConfigError(f"{path}: {problems}") from error
    return routes.model_copy(
        update={
            "directory": routes.directory.model_copy(
                update={"users": {k.casefold(): v for k, v in routes.directory.users.items()}}
            )
        }
    )
