"""`mxgate sandbox`: the deployed stack on one machine (mxgate.sandbox). Without an action it
listens on the template's ingress points until Ctrl-C; `send` takes one message through it and
reports what happened to each envelope recipient."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mxgate.cli import COMMANDS
from mxgate.cli.common import (
    add_message_arguments,
    add_settings_arguments,
    print_json,
    settings_from,
    table,
)
from mxgate.errors import ConfigError
from mxgate.mailmanager.template import read_parameter_file

if TYPE_CHECKING:
    from mxgate.sandbox.report import SendReport
    from mxgate.sandbox.runtime import Sandbox

LISTEN_HOME = "sandbox"  # under $MXGATE_HOME: the sandbox keeps its files apart from `run`'s


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "sandbox",
        help=COMMANDS["sandbox"].help,
        description="The AWS side before deploying it: the template's resources in moto, its "
        "ingress points on loopback, its rule sets acting on them (WriteToS3 into S3, "
        "InvokeLambda to the real handlers), the state machine in moto's interpreter, and "
        "delivery through the relay ingress point to local mailbox hosts. Without an action "
        "it listens until Ctrl-C.",
    )
    _common(parser)
    parser.add_argument(
        "--port", type=int, default=0, help="the OPEN ingress point's port (default: a free one)"
    )
    parser.set_defaults(handler=serve_command)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    send = actions.add_parser(
        "send",
        help="take one message through the stack and report each recipient's end",
        description="Send FILE as if IP (saying HELO) had handed it to the ingress point, wait "
        "until everything it set off has finished, and print each envelope recipient's "
        "outcome, route and detail, and for a delivery the envelope the mailbox host saw, the "
        "stored file, its Received hops and the provider's view of the sender.",
    )
    add_message_arguments(
        send, ip="192.0.2.25", helo="mail.sender.example", ingress="the first OPEN one"
    )
    send.add_argument("--json", action="store_true", help="print JSON")
    _common(send)
    send.set_defaults(handler=send_command)


def _common(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser)
    parser.add_argument(
        "--params",
        type=Path,
        metavar="FILE",
        help="parameter values over samconfig.toml's: a YAML/JSON mapping, samconfig.toml or "
        "a CloudFormation parameters list",
    )
    parser.add_argument(
        "--order",
        choices=["envelope-first", "object-first"],
        default="envelope-first",
        help="which of Mail Manager's two halves reaches the Start function first: the "
        "InvokeLambda envelope or the WriteToS3 object (default envelope-first)",
    )


def _sandbox(args: argparse.Namespace, **options: Any) -> Sandbox:
    try:
        from mxgate.sandbox.runtime import Sandbox, SandboxOptions  # noqa: PLC0415
    except ImportError as error:  # moto is the sandbox extra
        raise ConfigError(
            f"the sandbox needs moto and boto3 ({error}): pip install 'mxgate[sandbox]'"
        ) from None
    settings = settings_from(args, find_running=False)  # its own stack, not a gateway's
    # moto logs a JSONPath it looked for and did not find (the state machine's IsPresent);
    # aiosmtpd a deprecation of its own on every AUTH
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    return Sandbox(
        SandboxOptions(
            home=settings.home / LISTEN_HOME,
            config=settings.config,
            parameters=read_parameter_file(args.params) if args.params else {},
            arrival_order=args.order,
            **options,
        )
    )


def send_command(args: argparse.Namespace) -> int:
    raw = args.message.read_bytes()
    with _sandbox(args) as sandbox:
        report = sandbox.send(
            raw,
            mail_from=args.mail_from,
            recipients=args.rcpt,
            ip=args.ip,
            helo=args.helo,
            tls_protocol=None if args.tls == "none" else args.tls,
            ingress_point=args.ingress_point,
        )
        logs = sandbox.home / "logs"
    if args.json:
        print_json(report.model_dump(mode="json"))
        return 0
    print(f"message {report.message_id} (function logs: {logs / 'functions.log'})")
    rows = [[r.recipient, r.outcome, r.route, r.path or r.detail[:90]] for r in report.recipients]
    print(table(rows, ["RECIPIENT", "OUTCOME", "ROUTE", "STORED AS / DETAIL"]))
    for entry in report.recipients:
        if entry.provider is not None:
            view = entry.provider
            print(
                f"{entry.recipient}: MAIL FROM <{entry.mail_from}> at {entry.mailbox_host}; "
                f"the provider, skipping {', '.join(view.gateway_addresses)}, finds the sender "
                f"at {view.sender_ip}: spf={view.spf} dkim={' '.join(view.dkim) or 'none'} "
                f"dmarc={view.dmarc}"
            )
    return 0


def _print_report(report: SendReport) -> None:
    for entry in report.recipients:
        where = entry.path or entry.detail[:120]
        print(f"{report.message_id}  {entry.recipient}  {entry.outcome}  {entry.route}  {where}")
    sys.stdout.flush()


STOP_GRACE = 20.0  # seconds Ctrl-C leaves the sandbox to stop in order before it just exits


def _stop_anyway_after(seconds: float) -> None:
    """Ctrl-C always stops: if closing (or the interpreter's join of a thread moto or a
    function left running) takes longer than `seconds`, say which threads are still busy, with
    their stacks, and exit. Nothing is lost: the sandbox's AWS is in memory by design, and
    what reached a mailbox is already a file."""

    def exit_now() -> None:
        busy = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
        print(
            f"mxgate sandbox: still busy after {seconds:.0f}s ({', '.join(busy)}); stopping",
            file=sys.stderr,
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(0)

    timer = threading.Timer(seconds, exit_now)
    timer.daemon = True
    timer.start()


def serve_command(args: argparse.Namespace) -> int:
    with _sandbox(args, primary_port=args.port, on_report=_print_report) as sandbox:
        print(f"mxgate sandbox is running (home {sandbox.home})")
        for ingress_id, port in sandbox.listening.items():
            kind = sandbox.resources.ingress_points[ingress_id].Type
            print(f"  SMTP ingress   127.0.0.1:{port}  {ingress_id}: {kind}")
        for host, port in sandbox.mailbox_ports.items():
            print(f"  mailbox host   {host}  127.0.0.1:{port}  -> {sandbox.home}/mailboxes/{host}/")
        print(f"  function logs  {sandbox.home}/logs/functions.log")
        primary = sandbox.listening[sandbox.primary_ingress()]
        print("Try:")
        print(
            f"  swaks --server 127.0.0.1:{primary} --tls --from sender@example.org "
            f"--to alice@{sandbox.routes.employee_domains[0]}"
        )
        print("Ctrl-C stops.")
        sys.stdout.flush()
        stop = threading.Event()
        # Ctrl-C and SIGTERM stop it, also when started with SIGINT ignored (as a background
        # job of a non-interactive shell is, where Python leaves it ignored)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        stop.wait()
        _stop_anyway_after(STOP_GRACE)
    return 0
