"""`mxgate routes`: validate a routes file, and print its JSON Schema."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mxgate.cli import COMMANDS
from mxgate.cli.common import add_settings_arguments, settings_from
from mxgate.cli.rules import template_and_parameters, template_arguments
from mxgate.config_files import json_form
from mxgate.local.config import load_config
from mxgate.mailmanager.resources import accepted_domains, load_mail_manager
from mxgate.mailmanager.template import routes_parameters
from mxgate.routing.routes import load_checked_routes, routes_schema


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "routes",
        help=COMMANDS["routes"].help,
        description="`check [FILE]` validates a routes file (default: the one config/local.yaml "
        "names) with the template's parameter values filled in, checks its domains against the "
        "ones the template's traffic policy accepts, and summarises it (`--write-json FILE` "
        "writes the checked file as JSON, the form the Lambda functions read: `make sam-build` "
        "puts it in the config layer); `schema` prints the "
        "JSON Schema that config/routes.schema.json holds (`--output FILE` writes it).",
    )
    actions = parser.add_subparsers(dest="routes_command", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate a routes file")
    add_settings_arguments(check)
    check.add_argument("file", nargs="?", type=Path, metavar="FILE")
    check.add_argument(
        "--write-json",
        type=Path,
        metavar="OUT",
        help="once it is valid, write the routes file as JSON here (its ${Parameter} "
        "placeholders kept: the functions fill them from the deployed stack's parameters)",
    )
    template_arguments(check)
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
    template, parameters = template_and_parameters(args)
    mail_manager = load_mail_manager(template, parameters)
    accepted = accepted_domains(mail_manager)
    parameters_of = routes_parameters(mail_manager.resolver)
    routes = load_checked_routes(path, parameters_of, accepted, mail_manager.relays)
    print(f"{path}: valid, and its domains and relays are the ones {template} has")
    if args.write_json is not None:
        args.write_json.write_text(json_form(path, "routes"), encoding="utf-8")
        print(f"  wrote {args.write_json}")
    print(
        f"  employee domains {', '.join(routes.employee_domains)}; app domains "
        f"{', '.join(routes.app_domains) or 'none'}; directory: {len(routes.directory.users)} "
        f"listed, everyone else on {routes.directory.default}"
    )
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
