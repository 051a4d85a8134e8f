"""`mxgate run`: start the gateway in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import shutil
import sys
from pathlib import Path

from mxgate.cli import COMMANDS
from mxgate.cli.common import add_settings_arguments, settings_from
from mxgate.errors import EXIT_CODE, ConfigError, FailureKind, MxgateError
from mxgate.local.bootstrap import Bootstrap
from mxgate.local.runfile import (
    RUN_FILE,
    RunFile,
    claim_run_file,
    release_run_file,
    running_gateway,
)
from mxgate.local.server import Running, serve
from mxgate.local.setup import LocalSetup
from mxgate.mailmanager.template import logical_id_of
from mxgate.observability import configure_logging

log = logging.getLogger("mxgate.run")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "run",
        help=COMMANDS["run"].help,
        description="Start the SMTP ingress, the Mail Manager emulator, the workflow workers and "
        "the local mailbox hosts, configured by the template and the local configuration. "
        f"While it runs, {RUN_FILE} in this directory names its home, so the other commands "
        "run from here find it without --home.",
    )
    add_settings_arguments(parser)
    parser.add_argument(
        "--port", type=int, help="SMTP ingress port (env MXGATE_SMTP_PORT, default 2525)"
    )
    parser.add_argument(
        "--workers", type=int, help="workflow worker processes (env MXGATE_WORKERS)"
    )
    parser.set_defaults(handler=run)


def command_name() -> str:
    """How to call mxgate from this shell: `mxgate` when it is on PATH, else its path."""
    if shutil.which("mxgate"):
        return "mxgate"
    beside = Path(sys.executable).parent / "mxgate"
    return os.path.relpath(beside) if beside.exists() else "mxgate"


def banner(setup: LocalSetup, running: Running, home: str, *, found_here: bool = True) -> str:
    """What `mxgate run` prints once it listens. `found_here`: the commands run from this
    directory find this gateway (it holds the run file), so they need no --home."""
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
        if setup.config.mailbox_hosts[name].external:
            where = "external: delivered to what listens there (not started by mxgate)"
        else:
            where = f"-> {home}/mailboxes/{name}/<recipient>/new/"
        lines.append(f"  mailbox host   {name:<10} 127.0.0.1:{mailbox_port}  {where}")
    host, port = running.smtp
    tls_flag = " --tls" if setup.primary.ingress.requires_starttls else ""
    home_option = "" if found_here or home == ".mxgate" else f" --home {home}"
    lines += [
        f"  app events     {home}/events/<app>/",
        f"  timeline       {command_name()} trace{home_option}",
        f"  logs           {home}/logs/ (errors and tracebacks: {home}/logs/errors.log)",
        "Try:",
        f"  swaks --server {host}:{port}{tls_flag} --from sender@example.org --to alice@nutrition.co",
        "Ctrl-C stops.",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args, find_running=False, smtp_port=args.port, workers=args.workers)
    configure_logging(settings.log_level, settings.paths.error_log, latency=settings.latency_log)
    bootstrap = Bootstrap(settings)
    setup = bootstrap.setup  # the configuration is checked before anything starts
    project = Path.cwd()
    record = RunFile(
        pid=os.getpid(),
        home=setup.dirs.home,
        config=settings.config.resolve(),
        started_at=bootstrap.clock.now(),
    )

    def ready(running: Running) -> None:
        holder = claim_run_file(project, record)
        print(banner(setup, running, str(settings.home), found_here=holder is None), flush=True)
        if holder is not None:
            log.warning(
                "another gateway started from this directory holds its run file: commands "
                "run here find that one unless given --home",
                extra={"pid": holder.pid, "home": str(holder.home)},
            )

    try:
        asyncio.run(serve(bootstrap, ready))
    except MxgateError:
        raise
    except Exception as error:
        if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"{error.strerror or error}. Another mxgate (or mail server) listens there: "
                "choose free ports with MXGATE_SMTP_PORT (or --port), MXGATE_SMTP_AUTH_PORT and "
                "MXGATE_MAILBOX_<HOST>_PORT (0 picks a free one), or in "
                f"{settings.config}{_already_running(project)}"
            ) from error
        # the traceback goes to the error log as well, not only to the terminal
        log.critical("the gateway stopped on an unexpected error", exc_info=True)
        return EXIT_CODE[FailureKind.PERMANENT]
    finally:
        release_run_file(project, record.pid)
    return 0


def _already_running(project: Path) -> str:
    other = running_gateway(project)
    if other is None:
        return ""
    return f" (a gateway started from here is running: pid {other.pid}, home {other.home})"
