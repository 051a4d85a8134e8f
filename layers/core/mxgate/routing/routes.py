"""The routes file: one validated document shared by both runtimes.

`config/routes.schema.json` is generated from these models (`mxgate routes schema`), and a
test keeps the two in step.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from mxgate.config_files import ConfigFileError, Problem, load_model, suggestion
from mxgate.routing.parameters import substitute
from mxgate.routing.quarantine import QuarantineRule

Domain = Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")]
EmailAddress = Annotated[str, Field(pattern=r"^[^@\s<>]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")]
RouteName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_PATTERN = r"^(\d+(\.\d+)?[smhd])+$"


DURATION_FORMS = "90s, 5m, 1h30m, 5d or a number of seconds"


def parse_duration(value: object) -> object:
    """`90s`, `5m`, `1h30m`, `5d`, or a number of seconds."""
    if not isinstance(value, str):
        return value  # a number (or what pydantic refuses as one)
    text = value.strip()
    if re.fullmatch(DURATION_PATTERN, text):
        return sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(text))
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a duration: write {DURATION_FORMS}") from None


Duration = Annotated[
    float,
    Field(ge=0),
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "description": "seconds"},
                {"type": "string", "pattern": DURATION_PATTERN, "examples": ["90s", "5m", "5d"]},
            ]
        }
    ),
]

SES_MAX_MESSAGE_BYTES = 40 * 1024 * 1024  # SESv2 and SMTP: 40 MB per message


class Strict(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


class DeliveryPolicy(Strict):
    """How deliveries on a route behave. A route's own `delivery:` overrides these field by
    field; what it leaves out comes from the top-level `delivery:`."""

    unverified_sender: Literal["rewrite", "refuse"] = Field(
        default="rewrite",
        description="where the transport only sends from verified identities (SES): `rewrite` "
        "puts `rewrite_from` in From and the original From in Reply-To (this breaks the "
        "original DKIM signature); `refuse` dead-letters the delivery",
    )
    rewrite_from: EmailAddress | None = Field(
        default=None,
        description="the verified address From is rewritten to "
        "(default: mxgate@<first employee domain>)",
    )
    max_message_bytes: Annotated[int, Field(gt=0)] | None = Field(
        default=None,
        description="largest message this route sends (default: the transport's own limit, "
        "40 MB for SES)",
    )
    oversize: Literal["claim_check", "dead_letter"] = Field(
        default="claim_check",
        description="a message over the limit: `claim_check` delivers a short stub that links "
        "to the stored original; `dead_letter` keeps it in the dead-letter queue",
    )
    claim_check_url: str | None = Field(
        default=None,
        description="link template for claim checks, with {bucket}, {key} and {message_id} "
        "(default: a presigned URL on AWS, a file URI locally)",
    )
    link_lifetime: Duration = Field(
        default=7 * 86400,
        description="how long download links work: a claim check's, and those of an app "
        "event's raw message and attachments (the link and the text say until when)",
    )
    queue_lifetime: Duration = Field(
        default=5 * 86400,
        description="how long a deferred delivery is retried before it expires "
        "(Postfix maximal_queue_lifetime: 5d)",
    )
    backoff_min: Duration = Field(
        default=300,
        description="wait before the first deferred attempt; doubles each time "
        "(Postfix minimal_backoff_time: 300s)",
    )
    backoff_max: Duration = Field(
        default=4000,
        description="longest wait between deferred attempts (Postfix maximal_backoff_time: 4000s)",
    )
    dsn_on_expiry: bool = Field(
        default=True,
        description="when a deferred delivery expires, send the envelope sender a delivery "
        "status notification (RFC 3464); otherwise dead-letter it",
    )

    def merged(self, override: DeliveryPolicy | None) -> DeliveryPolicy:
        """These defaults with the fields `override` sets explicitly."""
        if override is None:
            return self
        return self.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})


class Directory(Strict):
    """Which mailbox host each employee lives on. At RCPT, an address at an employee domain
    that it does not list is refused as unknown, unless `unknown_users` is `default`."""

    default: str = Field(
        description="the mailbox host of employee addresses the directory does not list, "
        "when they are accepted (`unknown_users: default`, or mail that came in by another way)"
    )
    users: dict[str, str] = Field(default_factory=dict)
    unknown_users: Literal["refuse", "default"] = Field(
        default="refuse",
        description="an employee address the directory does not list: `refuse` answers "
        "550 5.1.1 at RCPT (as Postfix's relay_recipient_maps); `default` accepts it for the "
        "`default` host",
    )

    def host_for(self, address: str) -> str:
        return self.users.get(address.casefold(), self.default)


class Webhook(Strict):
    """An HTTPS endpoint of the application: each event is POSTed to it, signed."""

    url: Annotated[str, Field(pattern=r"^https?://")]
    secret_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")] = Field(
        description="environment variable holding the HMAC-SHA256 key (never the key itself)"
    )
    timeout: Duration = 10.0


class App(Strict):
    """An application that owns addresses on an application domain."""

    addresses: Annotated[list[str], Field(min_length=1)]
    description: str = ""
    webhook: Webhook | None = None
    hooks: list[str] = Field(default_factory=list, description="post-ingress hooks to run")
    delivery: DeliveryPolicy | None = None


class Destination(Strict):
    """A mailbox host: how mail for it leaves the gateway."""

    description: str = ""
    transport: Literal["ses", "smtp", "mail_manager"] = Field(
        default="ses",
        description="`mail_manager`: SMTP submission into the stack's relay ingress point, "
        "whose own rule set relays with MailFrom PRESERVE to `relay` (envelope sender, From "
        "and DKIM signatures intact); `ses`: SES SendEmail, with the sender policy (rewrites "
        "From for senders SES has not verified); `smtp`: submission to `host`",
    )
    relay: RouteName | None = Field(
        default=None,
        description="transport mail_manager: the template's MailManagerRelay (its logical id, "
        "e.g. WorkspaceRelay) the relay ingress point's rule set hands this host's mail to",
    )
    # SES: the recipient's domain is replaced by this routing domain
    # (Workspace: <domain>.test-google-a.com; Microsoft 365: <tenant>.mail.onmicrosoft.com).
    routing_domain: str | None = None
    # SMTP submission (for example to an AUTH ingress point whose rule set relays with PRESERVE)
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    starttls: bool = Field(default=True, description="require STARTTLS before AUTH and MAIL")
    verify_tls: bool = True
    username: str | None = None
    password_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")] | None = Field(
        default=None, description="environment variable holding the SMTP AUTH password"
    )
    hooks: list[str] = Field(default_factory=list, description="post-ingress hooks to run")
    delivery: DeliveryPolicy | None = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.transport == "smtp" and not self.host:
            raise ValueError("an smtp destination needs `host`")
        if (self.transport == "mail_manager") != (self.relay is not None):
            raise ValueError(
                "`relay` names the relay of a mail_manager destination, and only of one"
            )
        if (self.username is None) != (self.password_env is None):
            raise ValueError("`username` and `password_env` go together")
        return self


class Hook(Strict):
    """Called after ingress with the message as JSON, for each route that lists it. A hook
    observes: it is retried and dead-lettered like a delivery, and never changes routing."""

    description: str = ""
    function: str | None = Field(
        default=None, description="AWS: a Lambda function name or ARN, invoked synchronously"
    )
    command: Annotated[list[str], Field(min_length=1)] | None = Field(
        default=None,
        description="one machine: a command given the event on stdin; exit 75 means try again",
    )
    url: Annotated[str, Field(pattern=r"^https?://")] | None = Field(
        default=None, description="either runtime: an endpoint the event is POSTed to, signed"
    )
    secret_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")] | None = None
    timeout: Duration = 10.0

    @model_validator(mode="after")
    def _target(self) -> Self:
        if self.function is None and self.command is None and self.url is None:
            raise ValueError("a hook needs `function`, `command` or `url`")
        if self.url is not None and self.secret_env is None:
            raise ValueError("a hook with `url` needs `secret_env` (requests are signed)")
        return self


class Routes(Strict):
    employee_domains: Annotated[list[Domain], Field(min_length=1)]
    app_domains: list[Domain] = Field(default_factory=list)
    directory: Directory
    destinations: dict[RouteName, Destination]
    apps: dict[RouteName, App] = Field(default_factory=dict)
    delivery: DeliveryPolicy = Field(
        default_factory=DeliveryPolicy, description="the delivery policy of every route"
    )
    verified_identities: list[str] = Field(
        default_factory=list,
        description="SES identities (domains or addresses) mail may be sent from as it is; "
        "subdomains of a domain count (default: the employee and application domains)",
    )
    dsn_from: EmailAddress | None = Field(
        default=None, description="From of the DSNs (default: mailer-daemon@<employee domain>)"
    )
    quarantine: list[QuarantineRule] = Field(default_factory=list)
    own_domain_spoofing: Literal["quarantine", "deliver"] = Field(
        default="quarantine",
        description="mail from outside (not through an AUTH submission ingress point) whose "
        "From is on one of our domains (employee or application, or a subdomain) and that does "
        "not pass DMARC with alignment: `quarantine` holds it, with the reason, before any "
        "quarantine rule; `deliver` lets it through to the rules and routes",
    )
    hop_limit: Annotated[int, Field(ge=1)] = Field(
        default=50,
        description="a message that went through more relays than this (Received fields) is "
        "bounced as a routing loop (Postfix hopcount_limit: 50)",
    )
    hooks: dict[RouteName, Hook] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = reference_problems(self.model_dump())
        if problems:
            raise ValueError("; ".join(str(problem) for problem in problems))
        return self

    # ------------------------------------------------------------------- per route

    def policy(self, route: str) -> DeliveryPolicy:
        """The effective delivery policy of a destination or an app."""
        own = self.destinations.get(route) or self.apps.get(route)
        return self.delivery.merged(own.delivery if own is not None else None)

    def route_hooks(self, route: str) -> list[str]:
        own = self.destinations.get(route) or self.apps.get(route)
        return list(own.hooks) if own is not None else []

    def rewrite_address(self, route: str) -> str:
        return self.policy(route).rewrite_from or f"mxgate@{self.employee_domains[0]}"

    @property
    def own_domains(self) -> list[str]:
        """The domains only we may write From addresses of."""
        return [*self.employee_domains, *self.app_domains]

    @property
    def dsn_sender(self) -> str:
        return self.dsn_from or f"mailer-daemon@{self.employee_domains[0]}"

    def is_verified(self, address: str) -> bool:
        """Whether SES would send from `address` (a verified address, or a verified domain
        or one of its subdomains)."""
        address = address.casefold()
        domain = address.rpartition("@")[2]
        identities = self.verified_identities or [*self.employee_domains, *self.app_domains]
        for identity in (i.casefold() for i in identities):
            if "@" in identity:
                if address == identity:
                    return True
            elif domain == identity or domain.endswith(f".{identity}"):
                return True
        return False


def routed_address(recipient: str, routing_domain: str | None) -> str:
    """The address SES is asked to send to: the recipient's domain replaced by the mailbox
    host's routing domain (`alice@example.com` -> `alice@example.com.test-google-a.com`)."""
    if not routing_domain:
        return recipient
    local = recipient.rpartition("@")[0]
    return f"{local}@{routing_domain}"


def _mapping(value: object) -> dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _known(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def reference_problems(document: object) -> list[Problem]:
    """Names one part of a routes document gives another that lead nowhere, each with its
    place. Works on the document as written (whatever else is wrong in it), so `mxgate routes
    check` reports these together with the field errors."""
    root = _mapping(document)
    directory = _mapping(root.get("directory"))
    destinations = _mapping(root.get("destinations"))
    apps = _mapping(root.get("apps"))
    hooks = _mapping(root.get("hooks"))
    problems: list[Problem] = []

    def route_named(place: str, host: object, what: str, known: dict[str, Any]) -> None:
        if isinstance(host, str) and host not in known:
            problems.append(
                Problem(
                    place,
                    f"no {what} {host!r}{suggestion(host, known)} ({what}s: {_known(known)})",
                )
            )

    route_named("directory.default", directory.get("default"), "destination", destinations)
    owners: dict[str, str] = {}
    for address, host in _mapping(directory.get("users")).items():
        route_named(f"directory.users.{address}", host, "destination", destinations)
        if address.casefold() in owners:
            problems.append(
                Problem(
                    f"directory.users.{address}",
                    f"listed twice, as {owners[address.casefold()]} too (addresses ignore case)",
                )
            )
        owners[address.casefold()] = address
    for name in sorted(set(destinations) & set(apps)):
        problems.append(
            Problem(
                f"apps.{name}",
                f"{name!r} names both a destination and an app: route names are shared",
            )
        )
    app_domains = {d.casefold() for d in _strings(root.get("app_domains"))}
    owned: dict[str, str] = {}
    for name, app in apps.items():
        for index, address in enumerate(_strings(_mapping(app).get("addresses"))):
            place = f"apps.{name}.addresses[{index}]"
            if address.rpartition("@")[2].casefold() not in app_domains:
                problems.append(
                    Problem(
                        place,
                        f"{address} is not on an application domain "
                        f"(app_domains: {_known(app_domains)})",
                    )
                )
            if address.casefold() in owned:
                problems.append(
                    Problem(
                        place, f"{address} is owned by both {owned[address.casefold()]} and {name}"
                    )
                )
            owned[address.casefold()] = name
    for section, routes in (("destinations", destinations), ("apps", apps)):
        for name, route in routes.items():
            for index, hook in enumerate(_strings(_mapping(route).get("hooks"))):
                route_named(f"{section}.{name}.hooks[{index}]", hook, "hook", hooks)
    known_routes = {**destinations, **apps}
    for index, rule in enumerate(root.get("quarantine") or []):
        rule_name = _mapping(rule).get("name")
        place = f"quarantine[{index}]" + (f" ({rule_name})" if isinstance(rule_name, str) else "")
        for r_index, route in enumerate(_strings(_mapping(rule).get("routes"))):
            route_named(f"{place}.routes[{r_index}]", route, "route", known_routes)
    return problems


def routes_schema() -> dict[str, Any]:
    """The JSON Schema of the routes file (config/routes.schema.json)."""
    schema = Routes.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "mxgate routes",
        "description": "Who lives where, which application owns which address, quarantine "
        "rules, post-ingress hooks and delivery policies (config/routes.yaml).",
    }


def load_routes(path: Path, parameters: Mapping[str, str]) -> Routes:
    """The routes file, its `${Parameter}` placeholders filled with the template's parameter
    values (routing/parameters.py) and validated: every problem in it at once
    (ConfigFileError), each placed."""
    routes = load_model(
        path,
        Routes,
        "routes",
        references=reference_problems,
        prepare=lambda document: substitute(document, parameters),
    )
    return routes.model_copy(
        update={
            "directory": routes.directory.model_copy(
                update={"users": {k.casefold(): v for k, v in routes.directory.users.items()}}
            )
        }
    )


def domain_problems(routes: Routes, accepted: Mapping[str, str]) -> list[Problem]:
    """A domain the traffic policy lets in that the routes do not know: its mail would be
    planned no delivery (quarantined as unknown, every message). `accepted` maps each
    accepted domain to the place that accepts it. (A routes domain the MX refuses is only
    unused: a template may narrow what it accepts.)"""
    ours = {d.casefold() for d in (*routes.employee_domains, *routes.app_domains)}
    return [
        Problem(
            "employee_domains",
            f"the template accepts mail for {domain} ({where}), but the routes have no employee "
            f"or application domain {domain}: its mail would be planned no delivery "
            f"(routes domains: {_known(ours)})",
        )
        for domain, where in accepted.items()
        if domain not in ours
    ]


def relay_problems(routes: Routes, relays: Collection[str]) -> list[Problem]:
    """A destination whose `relay` is no relay of the template: its mail could not leave."""
    return [
        Problem(
            f"destinations.{name}.relay",
            f"names {destination.relay}, which is no relay of the template "
            f"({', '.join(sorted(relays)) or 'it has none'})",
        )
        for name, destination in routes.destinations.items()
        if destination.relay is not None and destination.relay not in relays
    ]


def load_checked_routes(
    path: Path,
    parameters: Mapping[str, str],
    accepted: Mapping[str, str],
    relays: Collection[str] | None = None,
) -> Routes:
    """The routes file (load_routes), refused with every problem when its domains and the
    domains the template accepts (`accepted`, as domain_problems takes it) disagree, or when
    it names a relay the template lacks (`relays`: the template's, when known)."""
    routes = load_routes(path, parameters)
    problems = domain_problems(routes, accepted)
    if relays is not None:
        problems += relay_problems(routes, relays)
    if problems:
        raise ConfigFileError(path, problems)
    return routes
