"""`mxgate run`: start the gateway in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import os

from mxgate.cli.common import add_settings_arguments, settings_from
from mxgate.local.runtime import load_setup
from mxgate.local.server import Running, serve
from mxgate.observability import configure_logging


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "run",
        help="start the gateway on this machine (Ctrl-C stops it)",
        description="Start the SMTP ingress, the Mail Manager emulator, the workflow workers and "
        "the local mailbox hosts, configured by the template and the local configuration.",
    )
    add_settings_arguments(parser)
    parser.add_argument(
        "--port", type=int, help="SMTP ingress port (env MXGATE_SMTP_PORT, default 2525)"
    )
    parser.add_argument(
        "--workers", type=int, help="workflow worker processes (env MXGATE_WORKERS)"
    )
    parser.set_defaults(handler=run)


def banner(setup_description: str, running: Running, home: str, tls_required: bool) -> str:
    host, port = running.smtp
    tls = " --tls" if tls_required else ""
    lines = [
        f"mxgate is running ({setup_description})",
        f"  SMTP ingress   {host}:{port}  STARTTLS{' required' if tls_required else ''}",
    ]
    for name, mailbox_port in running.mailbox_hosts.items():
        lines.append(
            f"  mailbox host   {name:<10} 127.0.0.1:{mailbox_port}  -> {home}/mailboxes/{name}/<recipient>/new/"
        )
    lines += [
        f"  app events     {home}/events/<app>/",
        f"  timeline       mxgate trace       logs: {home}/logs/",
        "Try:",
        f"  swaks --server {host}:{port}{tls} --from sender@example.org --to alice@nutrition.co",
        "Ctrl-C stops.",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args, smtp_port=args.port, workers=args.workers)
    configure_logging(settings.log_level)
    setup = load_setup(settings)
    description = (
        f"ingress point {setup.ingress_id}, {len(setup.rule_set.Rules)} rules, "
        f"template {os.path.relpath(setup.config.template)}"
    )
    tls_required = setup.ingress.TlsPolicy in ("REQUIRED", "FIPS")

    def ready(running: Running) -> None:
        print(banner(description, running, str(settings.home), tls_required), flush=True)

    asyncio.run(serve(setup, ready))
    return 0
