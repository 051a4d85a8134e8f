"""The `mxgate` command: one entry point, a module per subcommand."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mxgate import __version__
from mxgate.clock import SystemClock
from mxgate.errors import EXIT_CODE, EXIT_USAGE, MxgateError, kind_of

if TYPE_CHECKING:
    from mxgate.ports import Clock


@dataclass(frozen=True)
class Command:
    """A subcommand: the module that registers and runs it, and its line in `mxgate --help`."""

    module: str
    help: str


# In `mxgate --help` order. Only the chosen command's module is imported (`mxgate --version`
# and `mxgate trace` do not pay for the sandbox's or the console's imports).
COMMANDS = {
    "run": Command("run", "start the gateway on this machine (Ctrl-C stops it)"),
    "demo": Command(
        "demo", "send the sample messages through a fresh gateway and check their outcomes"
    ),
    "trace": Command("trace", "show what happened to a message (or list recent messages)"),
    "parse": Command("parse", "show what the gateway understands of a message file"),
    "auth": Command("auth", "check one sender: SPF, or a message's SPF, DKIM, DMARC and ARC"),
    "rules": Command(
        "rules", "explain a message's path through the traffic policy and rule set; check them"
    ),
    "address-list": Command(
        "addresslist", "add, remove, list or import the members of the template's address lists"
    ),
    "routes": Command("routes", "validate the routes file, or print its JSON Schema"),
    "dlq": Command("dlq", "list, show and redrive dead letters"),
    "archive": Command("archive", "search, read, export and purge archived mail"),
    "quarantine": Command("quarantine", "list, read, release and delete quarantined mail"),
    "console": Command(
        "console",
        "the web console: recent mail, timelines, archive, quarantine, dead letters, mailboxes",
    ),
    "check": Command(
        "check", "the cutover checklist: DNS, the ingress, the deployed stack (pass/warn/fail)"
    ),
    "sandbox": Command(
        "sandbox",
        "the deployed stack on one machine: moto, the real handlers, the Mail Manager path",
    ),
}
ALL = "*"  # build_parser(ALL): every command's own parser


def command_in(argv: Sequence[str]) -> str:
    """The subcommand the arguments name ("" if none): the first word that is not an option
    (the top level's options, --help and --version, take no value)."""
    return next((word for word in argv if not word.startswith("-")), "")


def build_parser(command: str = ALL) -> argparse.ArgumentParser:
    """The parser, with the full parser of `command` (of every command for ALL) and a line
    of help for the others."""
    parser = argparse.ArgumentParser(
        prog="mxgate",
        description="Inbound email gateway for AWS SES Mail Manager, and the same gateway on one machine.",
    )
    parser.add_argument("--version", action="version", version=f"mxgate {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, spec in COMMANDS.items():
        if command in (name, ALL):
            importlib.import_module(f"mxgate.cli.{spec.module}").register(commands)
        else:
            commands.add_parser(name, help=spec.help)
    return parser


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)command parser the arguments chose: its usage is the one to show."""
    while True:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, actions[0].dest, None) if actions else None
        if not actions or chosen not in actions[0].choices:
            return parser
        parser = actions[0].choices[chosen]


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    """Run one command. `clock`: what the command's composition root takes as the time (the
    system's unless a test pins it): `--since 1h` counts back from it."""
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(command_in(argv))
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # say it with the subcommand's usage, not the top level's
        _chosen(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    args.clock = clock if clock is not None else SystemClock()
    try:
        code: int = args.handler(args)
    except MxgateError as error:
        print(f"mxgate: error: {error}", file=sys.stderr)
        return EXIT_CODE[kind_of(error)]
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_USAGE
    return code
