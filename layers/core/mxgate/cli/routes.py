"""`mxgate routes`: validate a routes file, and print its JSON Schema."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mxgate.cli import COMMANDS
from mxgate.cli.common import add_settings_arguments, settings_from
from mxgate.local.config import load_config
from mxgate.routing.routes import load_routes, routes_schema


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "routes",
        help=COMMANDS["routes"].help,
        description="`check [FILE]` validates a routes file (default: the one config/local.yaml "
        "names) and summarises it; `schema` prints the JSON Schema that "
        "config/routes.schema.json holds (`--output FILE` writes it).",
    )
    actions = parser.add_subparsers(dest="routes_command", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate a routes file")
    add_settings_arguments(check)
    check.add_argument("file", nargs="?", type=Path, metavar="FILE")
    check.set_defaults(handler=check_routes)
    schema = actions.add_parser("schema", help="print the routes file's JSON Schema")
    schema.add_argument("--output", type=Path, help="write it to this file instead")
    schema.set_defaults(handler=print_schema)


def schema_text() -> str:
    return json.dumps(routes_schema(), indent=2, ensure_ascii=False) + "\n"


def print_schema(args: argparse.Namespace) -> int:
    if args.output is not None:
        args.output.write_text(schema_text(), encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        print(schema_text(), end="")
    return 0


def check_routes(args: argparse.Namespace) -> int:
    path = args.file
    if path is None:
        path = load_config(settings_from(args)).routes
    routes = load_routes(path)
    print(f"{path}: valid")
    print(
        f"  {len(routes.destinations)} destinations, {len(routes.apps)} apps, "
        f"{len(routes.quarantine)} quarantine rules, {len(routes.hooks)} hooks"
    )
    for name in [*routes.destinations, *routes.apps]:
        policy = routes.policy(name)
        print(
            f"  {name:<12} unverified sender: {policy.unverified_sender}, oversize: "
            f"{policy.oversize}, lifetime {policy.queue_lifetime / 3600:g}h, "
            f"DSN on expiry: {'yes' if policy.dsn_on_expiry else 'no'}"
        )
    return 0
