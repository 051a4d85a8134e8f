"""`mxgate run`: start the gateway in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os

from mxgate.cli.common import add_settings_arguments, settings_from
from mxgate.errors import ConfigError
from mxgate.local.bootstrap import Bootstrap
from mxgate.local.server import Running, serve
from mxgate.local.setup import LocalSetup
from mxgate.mailmanager.template import logical_id_of
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


def banner(setup: LocalSetup, running: Running, home: str) -> str:
    rule_sets = {
        logical_id_of(listener.ingress.RuleSetId): len(listener.rule_set.Rules)
        for listener in setup.listeners
    }
    shown = ", ".join(f"rule set {name} with {count} rules" for name, count in rule_sets.items())
    lines = [f"mxgate is running ({shown}, template {os.path.relpath(setup.config.template)})"]
    for listener in setup.listeners:
        host, port = running.ingress[listener.ingress_id]
        tls = "STARTTLS required" if listener.ingress.requires_starttls else "STARTTLS"
        kind: str = listener.ingress.Type
        if listener.auth:
            kind += f" (STARTTLS, then AUTH PLAIN/LOGIN as user {listener.ingress_id})"
        lines.append(f"  SMTP ingress   {host}:{port}  {listener.ingress_id}: {kind}, {tls}")
    for name, mailbox_port in running.mailbox_hosts.items():
        lines.append(
            f"  mailbox host   {name:<10} 127.0.0.1:{mailbox_port}  -> {home}/mailboxes/{name}/<recipient>/new/"
        )
    host, port = running.smtp
    tls_flag = " --tls" if setup.primary.ingress.requires_starttls else ""
    home_option = "" if home == ".mxgate" else f" --home {home}"  # where the CLI must look
    lines += [
        f"  app events     {home}/events/<app>/",
        f"  timeline       mxgate trace{home_option}       logs: {home}/logs/",
        "Try:",
        f"  swaks --server {host}:{port}{tls_flag} --from sender@example.org --to alice@nutrition.co",
        "Ctrl-C stops.",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args, smtp_port=args.port, workers=args.workers)
    configure_logging(settings.log_level)
    bootstrap = Bootstrap(settings)
    setup = bootstrap.setup  # the configuration is checked before anything starts

    def ready(running: Running) -> None:
        print(banner(setup, running, str(settings.home)), flush=True)

    try:
        asyncio.run(serve(bootstrap, ready))
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise ConfigError(
            f"{error.strerror or error}. Another mxgate (or mail server) listens there: "
            f"choose free ports in {settings.config} (smtp.port, smtp.auth_port, "
            "mailbox_hosts.<host>.port; 0 picks a free one) or MXGATE_SMTP_PORT / --port for "
            "the SMTP ingress"
        ) from error
    return 0
