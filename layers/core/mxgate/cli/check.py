"""`mxgate check`: the cutover checklist as a command.

DNS (MX with its TTL, SPF, DMARC, DKIM) through `--resolver` or the system's resolver; the
ingress as the seed's `openssl s_client` test walks it (`--smtp`); with `--send-test` a message
with a unique token, followed to its terminal state and read back where it was delivered;
with `--aws` the deployed stack (outputs, SES identity, ingress point). What the mailbox
providers' consoles hold is printed as a checklist with the values to enter.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mxgate.adapters.dns import DnsPythonResolver
from mxgate.adapters.local.files import write_atomically
from mxgate.adapters.local.state import SqliteState
from mxgate.adapters.smtp_probe import probe_ingress
from mxgate.cli.common import add_aws_arguments, add_settings_arguments, print_json, settings_from
from mxgate.cutover.aws import ingress_point_check, ses_identity_check, stack_check
from mxgate.cutover.checklist import provider_checklist, providers_of
from mxgate.cutover.dns import (
    PROVIDER_DKIM,
    addresses_of,
    dkim_check,
    dmarc_check,
    mx_check,
    spf_check,
    subdomain_trial_check,
)
from mxgate.cutover.model import Check, ChecklistItem, CutoverReport, Status
from mxgate.cutover.smtp import (
    Settled,
    delivered_header_checks,
    queued_id,
    smtp_checks,
    terminal_check,
)
from mxgate.local.mailbox import delivered_copy
from mxgate.local.runtime import Paths, load_mail_manager_config
from mxgate.local.settings import LocalSettings
from mxgate.ports import Resolver
from mxgate.routing.config import Routes, load_routes
from mxgate.timeline import RecipientState

if TYPE_CHECKING:
    from mxgate.adapters.aws.stack import DeployedStack

CHECK_SENDER = "mxgate-check@check.invalid"  # .invalid (RFC 2606): no SPF or DMARC to fail
TRIALS_FILE = "cutover-trials.json"  # subdomains that passed a --send-test, for the MX advice


def host_port(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "check",
        help="the cutover checklist: DNS, the ingress, the deployed stack (pass/warn/fail)",
        description="Check a domain for the cutover to the gateway: its MX (and the "
        "application subdomain's) against the ingress point, SPF (never the gateway or a "
        "shared SES range; still the company's senders), DMARC and DKIM; with --smtp the "
        "ingress as `openssl s_client -starttls smtp` sees it (and with --send-test a test "
        "message followed to its mailbox); with --aws the deployed stack. Each check is "
        "pass, warn or fail, with its evidence and what to do. Exits 1 when one fails.",
    )
    parser.add_argument("--domain", required=True, metavar="D", help="the domain to cut over")
    parser.add_argument(
        "--mx-target", metavar="HOST", help="the ingress point's host name (the stack's MxTarget)"
    )
    parser.add_argument(
        "--smtp", type=host_port, metavar="HOST:PORT", help="probe this ingress over SMTP"
    )
    parser.add_argument(
        "--resolver",
        type=host_port,
        metavar="HOST:PORT",
        help="send every DNS query to this server (default: the system's resolver)",
    )
    parser.add_argument(
        "--send-test",
        action="store_true",
        help="send a test message through --smtp, follow it to its terminal state and read "
        "the delivered headers",
    )
    parser.add_argument(
        "--rcpt", metavar="ADDRESS", help="the test recipient (default postmaster@D)"
    )
    parser.add_argument(
        "--mail-from",
        metavar="ADDRESS",
        default=CHECK_SENDER,
        help=f"the test message's envelope sender (default {CHECK_SENDER})",
    )
    parser.add_argument(
        "--dkim-selector",
        action="append",
        metavar="S",
        help="a DKIM selector to look up (default: the mailbox providers' own)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to follow the test message (default 60)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_settings_arguments(parser)
    add_aws_arguments(parser, ["state_table", "raw_bucket"])
    parser.set_defaults(handler=check_command, usage_error=parser.error)


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


# ----------------------------------------------------------------------------- trials


def _trials_path(home: Path) -> Path:
    return home / TRIALS_FILE


def _read_trials(home: Path) -> list[dict[str, str]]:
    try:
        trials = json.loads(_trials_path(home).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [t for t in trials if isinstance(t, dict)] if isinstance(trials, list) else []


def tried(home: Path, domain: str) -> list[str]:
    """The subdomains of `domain` whose --send-test passed, oldest first."""
    return [
        f"{t['domain']} at {t.get('at', '?')}"
        for t in _read_trials(home)
        if str(t.get("domain", "")).endswith(f".{domain}")
    ]


def remember_trial(home: Path, domain: str, message_id: str) -> None:
    trials = _read_trials(home)
    trials.append(
        {
            "domain": domain,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "message_id": message_id,
        }
    )
    write_atomically(_trials_path(home), json.dumps(trials[-100:], indent=2).encode())


# ----------------------------------------------------------------------------- SMTP


def test_message(run: Run, recipient: str) -> bytes:
    now = datetime.now(UTC)
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
    message = test_message(run, recipient) if run.args.send_test else None
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
        now=datetime.now(UTC),
        sent=message is not None,
    )
    if message is not None and probe.data is not None and probe.data.code == 250:
        run.message_id = queued_id(probe.data)


def _settled(states: Sequence[RecipientState]) -> list[Settled]:
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
    paths = Paths(run.facts.home)
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
    state = SqliteState(paths.state_db)
    try:
        message_id = run.message_id
        settled = wait_settled(
            run, message_id, [recipient], lambda: _settled(state.states(message_id))
        )
    finally:
        state.close()
    run.checks.append(terminal_check(run.message_id, [recipient], settled))
    for item in settled:
        if item.outcome != "delivered":
            continue
        copy = delivered_copy(paths.mailboxes, item.route, item.recipient, run.token.encode())
        if copy is None:
            continue
        header = copy.read_bytes().split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        run.checks += delivered_header_checks(
            str(copy), header, run.args.mail_from, run.facts.authserv_id
        )


# ----------------------------------------------------------------------------- AWS


def connect(args: argparse.Namespace) -> DeployedStack:
    from mxgate.adapters.aws.operator import operator_aws  # noqa: PLC0415 -- boto3 on demand
    from mxgate.adapters.aws.stack import DeployedStack  # noqa: PLC0415

    return DeployedStack(operator_aws(args))


def aws_checks(run: Run, deployed: DeployedStack) -> None:
    from mxgate.adapters.aws.stack import AwsError, failure  # noqa: PLC0415 -- boto3 on demand

    try:
        run.outputs = deployed.outputs()
        run.checks.append(stack_check(deployed.name, run.outputs))
    except AwsError as error:
        run.checks.append(stack_check(deployed.name, {}, failure(error)))
        return
    try:
        identity = deployed.email_identity(run.domain)
        run.checks.append(ses_identity_check(run.domain, identity, run.app_domains, run.resolver))
    except AwsError as error:
        run.checks.append(
            ses_identity_check(run.domain, None, run.app_domains, run.resolver, failure(error))
        )
    point_id = run.outputs.get("IngressPointId")
    if point_id is None:
        run.checks.append(
            ingress_point_check(None, run.mx_target, "the stack has no IngressPointId output")
        )
        return
    try:
        run.checks.append(ingress_point_check(deployed.ingress_point(point_id), run.mx_target))
    except AwsError as error:
        run.checks.append(ingress_point_check(None, run.mx_target, failure(error)))


def follow_aws(run: Run, deployed: DeployedStack, recipient: str, sent_at: datetime) -> None:
    """The test message on AWS: found by its token in the raw bucket, then its recipients'
    terminal states in the state table. Its delivered headers are in the mailbox."""
    names = deployed.operator.names
    bucket, table = names.raw_bucket, names.state_table
    if not (bucket and table):
        run.checks.append(
            Check(
                name="delivery.stored",
                subject=deployed.name,
                status=Status.FAIL,
                summary="the test message cannot be followed: no raw bucket or state table",
                fix="give --stack NAME (its outputs name them), or --raw-bucket and --table",
            )
        )
        return
    deadline = time.monotonic() + run.args.wait
    message_id = None
    while message_id is None and time.monotonic() < deadline:
        message_id = deployed.find_stored(bucket, "raw/", run.token.encode(), sent_at)
        if message_id is None:
            run.progress(f"looking for {run.token} in s3://{bucket}/raw/")
            time.sleep(2)
    if message_id is None:
        run.checks.append(
            Check(
                name="delivery.stored",
                subject=f"s3://{bucket}/raw/",
                status=Status.FAIL,
                summary=f"the test message ({run.token}) was not stored in {run.args.wait:g}s",
                fix="look at the rule set's logs (APPLICATION_LOGS of the rule set)",
            )
        )
        return
    run.message_id = message_id
    settled = wait_settled(
        run, message_id, [recipient], lambda: _settled(deployed.states(table, message_id))
    )
    run.checks.append(terminal_check(message_id, [recipient], settled))


# ----------------------------------------------------------------------------- the command


def build_report(args: argparse.Namespace, deployed: DeployedStack | None = None) -> CutoverReport:
    settings = settings_from(args)
    facts = local_facts(settings)
    if args.resolver is not None:
        resolver: Resolver = DnsPythonResolver([args.resolver[0]], args.resolver[1])
    else:
        resolver = DnsPythonResolver()
    run = Run(args, facts, resolver)
    if args.aws:
        if deployed is None:
            args.stack = args.stack or default_stack()
            deployed = connect(args)
        aws_checks(run, deployed)
    ips = dns_checks(run)
    recipient = args.rcpt or f"postmaster@{run.domain}"
    checklist = provider_checklist(facts.providers, ips)
    if args.smtp is not None:
        sent_at = datetime.now(UTC) - timedelta(minutes=1)  # clocks differ a little
        smtp_check(run, ips)
        if args.send_test and deployed is not None:
            follow_aws(run, deployed, recipient, sent_at)
            checklist.append(mailbox_reading(run, recipient))
        elif args.send_test:
            follow_local(run, recipient)
    report = CutoverReport(domain=run.domain, checks=run.checks, checklist=checklist)
    delivered = any(c.name == "delivery.terminal" and c.status is Status.PASS for c in run.checks)
    if delivered and run.message_id and report.status is not Status.FAIL:
        remember_trial(facts.home, run.domain, run.message_id)
    return report


def mailbox_reading(run: Run, recipient: str) -> ChecklistItem:
    """On AWS the delivered copy is in the provider's mailbox, where only its owner reads it."""
    return ChecklistItem(
        provider="the test mailbox",
        where=recipient,
        setting=f"the message 'mxgate check {run.token}': show original",
        value=f"Return-Path <{run.args.mail_from}> and an Authentication-Results field of the "
        "gateway",
    )


def check_command(args: argparse.Namespace) -> int:
    if args.stack and not args.aws:
        args.usage_error("--stack needs --aws")
    if args.send_test and args.smtp is None:
        args.usage_error("--send-test needs --smtp HOST:PORT")
    report = build_report(args)
    if args.json:
        print_json(
            {
                "domain": report.domain,
                "status": report.status.value,
                "counts": report.counts(),
                "checks": [c.model_dump() for c in report.checks],
                "checklist": [c.model_dump() for c in report.checklist],
            }
        )
    else:
        print("\n".join(report_lines(report)))
    return 1 if report.status is Status.FAIL else 0


def report_lines(report: CutoverReport) -> list[str]:
    lines = [f"mxgate check {report.domain}"]

    def label(check: Check) -> str:
        return check.name if check.subject == report.domain else f"{check.name} {check.subject}"

    width = max((len(label(c)) for c in report.checks), default=4)
    for check in report.checks:
        lines.append(f"{check.status.value.upper():4}  {label(check):{width}}  {check.summary}")
        lines += [f"{'':6}{'':{width}}  | {line}" for line in check.evidence]
        if check.fix and check.status is not Status.PASS:
            lines.append(f"{'':6}{'':{width}}  fix: {check.fix}")
    if report.checklist:
        lines.append("\nTo set by hand (mxgate cannot read these):")
        place = None
        for item in report.checklist:
            if (item.provider, item.where) != place:
                place = (item.provider, item.where)
                lines.append(f"  {item.provider}: {item.where}")
            lines.append(f"    {item.setting}: {item.value}")
    counts = report.counts()
    lines.append(f"\n{counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail")
    return lines
