"""`mxgate rules`: see why the template's Mail Manager resources do what they do.

`explain` runs one message through an ingress point's traffic policy and rule set without
sending or storing anything; `check` validates the Mail Manager resources with our models
(every combination of the template conditions they use) and with cfn-lint; `replay`
(cli/replay.py) runs past mail through a changed template.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mxgate.cli import COMMANDS
from mxgate.cli.common import (
    add_message_arguments,
    add_settings_arguments,
    print_json,
    settings_from,
)
from mxgate.errors import ConfigError
from mxgate.local.bootstrap import Bootstrap
from mxgate.local.config import load_config
from mxgate.local.facts import message_facts
from mxgate.local.setup import ParameterSource, local_parameter_sources, template_parameters
from mxgate.mailmanager.explain import explain
from mxgate.mailmanager.facts import SessionFacts
from mxgate.mailmanager.resources import (
    MAIL_MANAGER_TYPES,
    MailManagerResources,
    check_mail_manager,
    load_mail_manager,
)
from mxgate.mailmanager.template import read_parameter_file, read_template
from mxgate.message.raw import RawMessage
from mxgate.records import Envelope

MAX_CONDITION_COMBINATIONS = 16


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "rules",
        help=COMMANDS["rules"].help,
        description="Explain or check the template's Mail Manager traffic policy and rule set.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    why = actions.add_parser(
        "explain",
        help="what the gateway would do with a message, and why (sends nothing)",
        description="Evaluate FILE as the ingress point would: the traffic policy for each "
        "recipient (which statement decided), then the rule set (which rules matched, which "
        "condition decided each, the actions that would run). Nothing is sent or stored. "
        "Without --template, the template and parameter values come from the local "
        "configuration (samconfig.toml, then local.yaml); --params adds values on top.",
    )
    add_message_arguments(why, ip="127.0.0.1", helo="localhost", ingress="the first")
    template_arguments(why)
    why.add_argument("--json", action="store_true", help="print JSON")
    why.set_defaults(handler=explain_command)

    check = actions.add_parser(
        "check",
        help="validate the Mail Manager resources (our models and cfn-lint)",
        description="Validate the template's Mail Manager resources with mxgate's models (for "
        "every combination of the template conditions they use) and with cfn-lint, and print "
        "each problem with its place. Exits 1 when there is one.",
    )
    template_arguments(check)
    check.set_defaults(handler=check_command)
    for sub in (why, check):
        add_settings_arguments(sub)
    from mxgate.cli import replay  # noqa: PLC0415 -- it imports this module's helpers

    replay.register(actions)


def template_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--template", type=Path, help="the template (default: the local configuration's)"
    )
    parser.add_argument(
        "--params",
        type=Path,
        metavar="FILE",
        help="parameter values: samconfig.toml, a YAML/JSON mapping (or a file with "
        "`parameters:`), or a CloudFormation parameters list",
    )


def template_and_parameters(args: argparse.Namespace) -> tuple[Path, dict[str, str]]:
    """The template, and its parameter values: the local configuration's (unless a template is
    named), then --params on top."""
    sources: list[ParameterSource] = []
    if args.template is not None:
        template = args.template
    else:
        settings = settings_from(args)
        config = load_config(settings)
        template = config.template
        sources += local_parameter_sources(config, settings.config)
    if args.params is not None:
        sources.append((str(args.params), read_parameter_file(args.params)))
    return template, template_parameters(template, sources)


def _ingress_id(config: MailManagerResources, requested: str | None) -> str:
    if requested is not None:
        return config.ingress_point(requested)[0]
    open_points = [k for k, v in config.ingress_points.items() if v.Type == "OPEN"]
    if open_points:
        return open_points[0]
    return config.ingress_point()[0]


def explain_command(args: argparse.Namespace) -> int:
    template, parameters = template_and_parameters(args)
    config = load_mail_manager(template, parameters)
    ingress_id = _ingress_id(config, args.ingress_point)
    try:
        raw = args.message.read_bytes()
    except OSError as error:
        raise ConfigError(f"{args.message}: cannot read: {error.strerror}") from error
    tls = None if args.tls == "none" else args.tls
    envelope = Envelope(
        message_id="(explain)",
        mail_from=args.mail_from,
        recipients=list(args.rcpt),
        helo=args.helo,
        source_ip=args.ip,
        tls_protocol=tls,
        ingress_point=ingress_id,
    )
    settings = settings_from(args)
    bootstrap = Bootstrap(settings)
    book = bootstrap.address_book()
    bound = bootstrap.blocklists(config) if settings.config.is_file() else {}
    result = explain(
        config=config,
        ingress_id=ingress_id,
        facts=message_facts(envelope, RawMessage.of(raw)),
        recipients=args.rcpt,
        session=SessionFacts(args.ip, tls, {n: a.analyze(args.ip) for n, a in bound.items()}),
        book=book,
    )
    if args.json:
        print_json(result.as_json())
        return 0
    print(
        f"{args.message} ({len(raw)} bytes) from <{args.mail_from}> at ingress point "
        f"{ingress_id}: sender {args.ip}, HELO {args.helo}, {tls or 'no TLS'}\n"
    )
    print("\n".join(result.lines()).rstrip())
    return 0


# ----------------------------------------------------------------------------- check


def _conditions_used(document: Mapping[str, Any]) -> list[str]:
    """The template conditions the Mail Manager resources depend on directly."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("Fn::If"), list) and node["Fn::If"]:
                found.append(str(node["Fn::If"][0]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for resource in (document.get("Resources") or {}).values():
        if isinstance(resource, dict) and resource.get("Type") in MAIL_MANAGER_TYPES:
            if isinstance(resource.get("Condition"), str):
                found.append(resource["Condition"])
            walk(resource.get("Properties"))
    return sorted(set(found))


def model_problems(template: Path, parameters: Mapping[str, str]) -> list[str]:
    """Our models' problems, over every combination of the conditions in play."""
    conditions = _conditions_used(read_template(template))
    if not conditions or 2 ** len(conditions) > MAX_CONDITION_COMBINATIONS:
        combinations: list[dict[str, bool]] = [{}]
    else:
        combinations = [
            dict(zip(conditions, values, strict=True))
            for values in itertools.product([False, True], repeat=len(conditions))
        ]
    seen: dict[str, list[dict[str, bool]]] = {}
    for combination in combinations:
        _, problems = check_mail_manager(template, parameters, combination)
        for problem in problems:
            seen.setdefault(str(problem), []).append(combination)
    lines = []
    for text, where in seen.items():
        if len(where) == len(combinations):
            lines.append(text)
            continue
        # the conditions that hold one value wherever the problem shows are what it depends on
        fixed = {k: v for k, v in where[0].items() if all(c[k] == v for c in where)}
        when = ", ".join(f"{k}={str(v).lower()}" for k, v in fixed.items())
        lines.append(f"{text} (when {when})")
    return lines


def cfn_lint_problems(template: Path, names: set[str]) -> tuple[list[str], int]:
    """cfn-lint's findings on the Mail Manager resources (and parse errors), and how many
    findings it had elsewhere."""
    try:
        from cfnlint.api import (  # type: ignore[import-untyped]  # noqa: PLC0415 -- a dev tool
            ManualArgs,
            lint_file,
        )
    except ImportError:
        return ["cfn-lint is not installed here (pip install cfn-lint): skipped"], 0
    matches = lint_file(template, config=ManualArgs(regions=["us-east-1"]))
    ours, elsewhere = [], 0
    for match in matches:
        path = [str(part) for part in (getattr(match, "path", None) or [])]
        is_ours = len(path) >= 2 and path[0] == "Resources" and path[1] in names
        if is_ours or not path:
            where = f"{template}:{match.linenumber}:{match.columnnumber}"
            ours.append(f"{where} {match.rule.id} {'/'.join(path)}: {match.message}")
        else:
            elsewhere += 1
    return ours, elsewhere


def check_command(args: argparse.Namespace) -> int:
    template, parameters = template_and_parameters(args)
    document = read_template(template)
    names = {
        name
        for name, resource in (document.get("Resources") or {}).items()
        if isinstance(resource, dict) and resource.get("Type") in MAIL_MANAGER_TYPES
    }
    ours = model_problems(template, parameters)
    linted, elsewhere = cfn_lint_problems(template, names)
    print(f"{template}: {len(names)} Mail Manager resources ({', '.join(sorted(names))})")
    for line in ours:
        print(f"  model     {line}")
    for line in linted:
        print(f"  cfn-lint  {line}")
    if elsewhere:
        print(
            f"  ({elsewhere} cfn-lint findings outside the Mail Manager resources: sam validate --lint)"
        )
    problems = len(ours) + len([line for line in linted if "skipped" not in line])
    print(f"{problems} problem{'s' if problems != 1 else ''}")
    return 1 if problems else 0
