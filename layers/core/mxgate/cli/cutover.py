"""One `mxgate check` run: what this checkout knows of the gateway, then each check in turn,
DNS, the SMTP probe, the test message followed to its end, the deployed stack; the judgements
are cutover/'s, this module gathers what they judge."""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mxgate.adapters.local.maildir import Maildir
from mxgate.adapters.smtp_probe import probe_ingress
from mxgate.cutover.checklist import providers_of
from mxgate.cutover.dns import (
    PROVIDER_DKIM,
    addresses_of,
    dkim_check,
    dmarc_check,
    mx_check,
    subdomain_trial_check,
)
from mxgate.cutover.model import Check, Status
from mxgate.cutover.smtp import (
    Settled,
    delivered_header_checks,
    queued_id,
    smtp_checks,
    terminal_check,
)
from mxgate.cutover.spf import spf_check
from mxgate.local.bootstrap import Bootstrap
from mxgate.local.settings import LocalSettings
from mxgate.local.setup import load_mail_manager_config
from mxgate.local.trials import tried
from mxgate.ports import Resolver
from mxgate.records import RecipientState
from mxgate.routing.routes import Routes, load_routes

if TYPE_CHECKING:
    pass

CHECK_SENDER = "mxgate-check@check.invalid"  # .invalid (RFC 2606): no SPF or DMARC to fail


# ----------------------------------------------------------------------------- what is known


@dataclass(frozen=True)
class LocalFacts:
    """What this checkout's configuration says about the gateway."""

    routes: Routes
    relay_hosts: list[str]
    max_message_size: int | None
    authserv_id: str
    home: Path

    @property
    def providers(self) -> list[str]:
        hosts = [
            *self.relay_hosts,
            *(d.routing_domain or "" for d in self.routes.destinations.values()),
        ]
        return providers_of(hosts)


def local_facts(settings: LocalSettings) -> LocalFacts:
    config, mail_manager = load_mail_manager_config(settings)
    open_points = [p for p in mail_manager.ingress_points.values() if p.Type == "OPEN"]
    size = mail_manager.traffic_policy(open_points[0]).max_message_size if open_points else None
    return LocalFacts(
        routes=load_routes(config.routes),
        relay_hosts=[relay.ServerName for relay in mail_manager.relays.values()],
        max_message_size=size,
        authserv_id=settings.hostname,
        home=settings.home,
    )


def default_stack() -> str:
    """samconfig.toml's stack_name, else "mxgate"."""
    try:
        import tomllib  # noqa: PLC0415 -- only when --aws is given without --stack

        config = tomllib.loads(Path("samconfig.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "mxgate"
    for command in ("deploy", "global"):
        name = config.get("default", {}).get(command, {}).get("parameters", {}).get("stack_name")
        if isinstance(name, str) and name:
            return name
    return "mxgate"


@dataclass
class Run:
    """One `mxgate check`: what it found so far."""

    args: argparse.Namespace
    facts: LocalFacts
    resolver: Resolver
    bootstrap: Bootstrap
    checks: list[Check] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    token: str = ""
    message_id: str | None = None

    @property
    def domain(self) -> str:
        return str(self.args.domain).lower().rstrip(".")

    @property
    def app_domains(self) -> list[str]:
        return [
            d.lower()
            for d in self.facts.routes.app_domains
            if d.lower().endswith(f".{self.domain}")
        ]

    @property
    def mx_target(self) -> str | None:
        return self.args.mx_target or self.outputs.get("MxTarget")

    def progress(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- DNS


def dns_checks(run: Run) -> list[str]:
    """MX, test subdomain, SPF, DMARC, DKIM; returns the gateway's addresses."""
    target = run.mx_target
    smtp_host = run.args.smtp[0] if run.args.smtp else None
    ips: list[str] = []
    if target:
        ips = addresses_of(run.resolver, target)
    elif smtp_host:
        ips = [smtp_host] if _is_ip(smtp_host) else addresses_of(run.resolver, smtp_host)
    main = mx_check(run.resolver, run.domain, target)
    run.checks.append(main.check)
    for app_domain in run.app_domains:
        run.checks.append(mx_check(run.resolver, app_domain, target).check)
    run.checks.append(
        subdomain_trial_check(run.domain, main.live, tried(run.facts.home, run.domain))
    )
    run.checks.append(spf_check(run.resolver, run.domain, ips, run.facts.providers))
    run.checks.append(dmarc_check(run.resolver, run.domain))
    selectors = run.args.dkim_selector or [
        s for provider in run.facts.providers for s in PROVIDER_DKIM.get(provider, ())
    ]
    run.checks.append(dkim_check(run.resolver, run.domain, selectors))
    return ips


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- SMTP


def token_message(run: Run, recipient: str) -> bytes:
    now = run.bootstrap.clock.now()
    return (
        f"From: mxgate check <{run.args.mail_from}>\r\n"
        f"To: <{recipient}>\r\n"
        f"Subject: mxgate check {run.token}\r\n"
        f"Date: {format_datetime(now)}\r\n"
        f"Message-ID: <{run.token}@mxgate-check>\r\n"
        f"X-Mxgate-Check: {run.token}\r\n"
        "\r\n"
        f"Sent by `mxgate check --send-test` to test the gateway ({run.token}).\r\n"
    ).encode()


def smtp_check(run: Run, ips: Sequence[str]) -> None:
    host, port = run.args.smtp
    recipient = run.args.rcpt or f"postmaster@{run.domain}"
    address = host if _is_ip(host) else next(iter(addresses_of(run.resolver, host)), host)
    if run.args.send_test:
        run.token = f"mxgate-check-{secrets.token_hex(8)}"
    message = token_message(run, recipient) if run.args.send_test else None
    probe = probe_ingress(
        address,
        port,
        shown_host=host,
        helo="mxgate-check.invalid",
        mail_from=run.args.mail_from,
        recipient=recipient,
        message=message,
    )
    run.checks += smtp_checks(
        probe,
        expected_name=run.mx_target or host,
        expected_size=run.facts.max_message_size,
        now=run.bootstrap.clock.now(),
        sent=message is not None,
    )
    if message is not None and probe.data is not None and probe.data.code == 250:
        run.message_id = queued_id(probe.data)


def settled_states(states: Sequence[RecipientState]) -> list[Settled]:
    return [
        Settled(recipient=s.recipient, outcome=s.outcome.value, route=s.route, detail=s.detail)
        for s in states
    ]


def wait_settled(
    run: Run, message_id: str, recipients: Sequence[str], states: Callable[[], list[Settled]]
) -> list[Settled]:
    deadline = time.monotonic() + run.args.wait
    said = 0.0
    while True:
        found = states()
        done = {s.recipient.casefold() for s in found}
        if all(r.casefold() in done for r in recipients) or time.monotonic() > deadline:
            return found
        if time.monotonic() - said > 5:
            run.progress(f"waiting for {message_id}: {len(done)} of {len(recipients)} settled")
            said = time.monotonic()
        time.sleep(0.2)


def follow_local(run: Run, recipient: str) -> None:
    """The test message on this machine: its timeline, then the Maildir copy's headers."""
    paths = run.bootstrap.paths
    if run.message_id is None:
        return
    if not paths.state_db.exists():
        run.checks.append(
            Check(
                name="delivery.terminal",
                subject=run.message_id,
                status=Status.FAIL,
                summary=f"no timeline under {paths.home}: the gateway keeps its state elsewhere",
                fix="give the gateway's --home (MXGATE_HOME)",
            )
        )
        return
    state = run.bootstrap.state()
    try:
        message_id = run.message_id
        settled = wait_settled(
            run, message_id, [recipient], lambda: settled_states(state.states(message_id))
        )
    finally:
        state.close()
    run.checks.append(terminal_check(run.message_id, [recipient], settled))
    for item in settled:
        if item.outcome != "delivered":
            continue
        copy = Maildir(paths.mailboxes / item.route).find(item.recipient, run.token.encode())
        if copy is None:
            continue
        header = copy.read_bytes().split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        run.checks += delivered_header_checks(
            str(copy), header, run.args.mail_from, run.facts.authserv_id
        )
