"""`mxgate check`: the cutover checklist as a command (the run: cli/cutover.py).

DNS (MX with its TTL, SPF, DMARC, DKIM) through `--resolver` or the system's resolver; the
ingress as the seed's `openssl s_client` test walks it (`--smtp`); with `--send-test` a message
with a unique token, followed to its terminal state and read back where it was delivered;
with `--aws` the deployed stack (outputs, SES identity, ingress point). What the mailbox
providers' consoles hold is printed as a checklist with the values to enter.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import TYPE_CHECKING

from mxgate.adapters.dns import DnsPythonResolver
from mxgate.cli import COMMANDS
from mxgate.cli.common import add_aws_arguments, add_settings_arguments, print_json, settings_from
from mxgate.cli.cutover import (
    CHECK_SENDER,
    Run,
    default_stack,
    dns_checks,
    follow_local,
    local_facts,
    smtp_check,
)
from mxgate.cli.cutover_aws import aws_checks, connect, follow_aws, mailbox_reading
from mxgate.cutover.checklist import provider_checklist
from mxgate.cutover.model import Check, CutoverReport, Status
from mxgate.local.bootstrap import Bootstrap
from mxgate.local.trials import remember_trial
from mxgate.ports import Resolver

if TYPE_CHECKING:
    from mxgate.adapters.aws.stack import DeployedStack


def host_port(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "check",
        help=COMMANDS["check"].help,
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


def build_report(args: argparse.Namespace, deployed: DeployedStack | None = None) -> CutoverReport:
    settings = settings_from(args)
    facts = local_facts(settings)
    if args.resolver is not None:
        resolver: Resolver = DnsPythonResolver([args.resolver[0]], args.resolver[1])
    else:
        resolver = DnsPythonResolver()
    run = Run(args, facts, resolver, Bootstrap(settings))
    if args.aws:
        if deployed is None:
            args.stack = args.stack or default_stack()
            deployed = connect(args)
        aws_checks(run, deployed)
    ips = dns_checks(run)
    recipient = args.rcpt or f"postmaster@{run.domain}"
    checklist = provider_checklist(facts.providers, ips)
    if args.smtp is not None:
        sent_at = run.bootstrap.clock.now() - timedelta(minutes=1)  # clocks differ a little
        smtp_check(run, ips)
        if args.send_test and deployed is not None:
            follow_aws(run, deployed, recipient, sent_at)
            checklist.append(mailbox_reading(run, recipient))
        elif args.send_test:
            follow_local(run, recipient)
    report = CutoverReport(domain=run.domain, checks=run.checks, checklist=checklist)
    delivered = any(c.name == "delivery.terminal" and c.status is Status.PASS for c in run.checks)
    if delivered and run.message_id and report.status is not Status.FAIL:
        remember_trial(facts.home, run.domain, run.message_id, run.bootstrap.clock.now())
    return report


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
