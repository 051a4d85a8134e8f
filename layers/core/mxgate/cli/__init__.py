"""The `mxgate` command: one entry point, a module per subcommand."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mxgate import __version__
from mxgate.errors import EXIT_CODE, EXIT_USAGE, MxgateError, kind_of


def build_parser() -> argparse.ArgumentParser:
    from mxgate.cli import (  # noqa: PLC0415 -- keep `mxgate --help` fast
        addresslist,
        archive,
        auth,
        check,
        console,
        demo,
        dlq,
        parse,
        quarantine,
        routes,
        rules,
        run,
        sandbox,
        trace,
    )

    parser = argparse.ArgumentParser(
        prog="mxgate",
        description="Inbound email gateway for AWS SES Mail Manager, and the same gateway on one machine.",
    )
    parser.add_argument("--version", action="version", version=f"mxgate {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (
        run,
        demo,
        trace,
        parse,
        auth,
        rules,
        addresslist,
        routes,
        dlq,
        archive,
        quarantine,
        console,
        check,
        sandbox,
    ):
        module.register(commands)
    return parser


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)command parser the arguments chose: its usage is the one to show."""
    while True:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, actions[0].dest, None) if actions else None
        if not actions or chosen not in actions[0].choices:
            return parser
        parser = actions[0].choices[chosen]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # say it with the subcommand's usage, not the top level's
        _chosen(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
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
