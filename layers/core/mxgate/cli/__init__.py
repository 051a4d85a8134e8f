"""The `mxgate` command: one entry point, a module per subcommand."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mxgate import __version__
from mxgate.errors import EXIT_CODE, EXIT_USAGE, MxgateError, kind_of


def build_parser() -> argparse.ArgumentParser:
    from mxgate.cli import addresslist, demo, dlq, parse, routes, rules, run, trace  # noqa: PLC0415 -- keep `mxgate --help` fast

    parser = argparse.ArgumentParser(
        prog="mxgate",
        description="Inbound email gateway for AWS SES Mail Manager, and the same gateway on one machine.",
    )
    parser.add_argument("--version", action="version", version=f"mxgate {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (run, demo, trace, parse, rules, addresslist, routes, dlq):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
