"""`mxgate rules replay`: what a changed template (and changed routes) would have decided for
the mail that really came in. Past messages, as they were received, go through the deployed
template and the new one; nothing is delivered or stored, and only the recipients whose
decision changes are printed, old -> new, with the rules that made the difference."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mxgate.cli.common import add_aws_arguments, add_settings_arguments, print_json, settings_from
from mxgate.local.bootstrap import Bootstrap
from mxgate.local.config import LocalConfig, load_config
from mxgate.local.history import History
from mxgate.local.replay import ReplayFacts, run_replay
from mxgate.local.setup import ParameterSource, local_parameter_sources
from mxgate.mailmanager.resources import load_mail_manager
from mxgate.mailmanager.template import (
    STACK_NAME,
    parameter_values,
    read_parameter_file,
    read_template,
)
from mxgate.replay.decisions import Change, Comparison, Configuration, Decision, StoredMessage
from mxgate.replay.received import added_fields
from mxgate.routing.routes import load_routes, parse_duration

if TYPE_CHECKING:
    from mxgate.adapters.aws.stack import DeployedStack


def since_argument(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not isinstance(seconds, float) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 7d or 12h")
    return seconds


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = actions.add_parser(
        "replay",
        help="what a changed template would have decided for past mail (a dry run)",
        description="Run the messages received in the last --since (as they were received: "
        "the local history, or with --aws the raw bucket) through the template in use and "
        "through NEW.yaml (and --routes), and print the recipients whose decision would "
        "change: old -> new, with the rules that made the difference. Nothing is delivered, "
        "stored or logged. Sender authentication and blocklists are asked again now.",
    )
    replay.add_argument("--template", type=Path, required=True, metavar="NEW.yaml")
    replay.add_argument(
        "--routes", type=Path, metavar="FILE", help="a changed routes file (default: the same)"
    )
    replay.add_argument(
        "--params",
        type=Path,
        metavar="FILE",
        help="parameter values for NEW.yaml, on top of those in use",
    )
    replay.add_argument(
        "--since",
        type=since_argument,
        default=since_argument("7d"),
        metavar="DURATION",
        help="how far back (default 7d; e.g. 12h, 1d)",
    )
    replay.add_argument("--limit", type=int, metavar="N", help="at most the N newest messages")
    replay.add_argument(
        "--no-auth",
        action="store_true",
        help="skip sender authentication (rules on SPF/DKIM/DMARC then see PROCESSING_FAILED)",
    )
    replay.add_argument("--json", action="store_true", help="print JSON")
    add_settings_arguments(replay)
    add_aws_arguments(replay, ["raw_bucket", "state_table"])  # the table: the envelopes
    replay.set_defaults(handler=replay_command, usage_error=replay.error)


# ----------------------------------------------------------------------------- configurations


def _declared(document: Mapping[str, Any], values: Mapping[str, object]) -> dict[str, object]:
    declared = document.get("Parameters") or {}
    return {k: v for k, v in values.items() if k in declared}


def configurations(
    args: argparse.Namespace,
    config: LocalConfig,
    settings_config: Path,
    deployed: Mapping[str, str] | None,
    stack: str,
) -> tuple[Configuration, Configuration]:
    """The template in use (with the values it runs with) and NEW.yaml (the same values, as
    far as it declares them, then --params)."""
    sources: list[ParameterSource] = (
        [(f"stack {stack}", deployed)]
        if deployed is not None
        else local_parameter_sources(config, settings_config)
    )
    old_document = read_template(config.template)
    old = load_mail_manager(
        config.template,
        parameter_values(old_document, [(s, _declared(old_document, v)) for s, v in sources]),
        stack=stack,
    )
    new_document = read_template(args.template)
    new_sources = [(s, _declared(new_document, v)) for s, v in sources]
    if args.params is not None:
        new_sources.append((str(args.params), read_parameter_file(args.params)))
    new = load_mail_manager(args.template, parameter_values(new_document, new_sources), stack=stack)
    routes = load_routes(config.routes)
    new_routes = load_routes(args.routes) if args.routes else routes
    return (
        Configuration(str(config.template), old, routes),
        Configuration(str(args.template), new, new_routes),
    )


# ----------------------------------------------------------------------------- history


def local_history(history: History, since: datetime, limit: int | None) -> Iterator[StoredMessage]:
    for path in history.messages(since, limit):
        message = history.read(path)
        if message.received_at >= since:
            yield message


class Progress:
    def __init__(self) -> None:
        self.said = time.monotonic()

    def __call__(self, done: int) -> None:
        if time.monotonic() - self.said > 2:
            print(f"replayed {done} messages", file=sys.stderr, flush=True)
            self.said = time.monotonic()


def replay_command(args: argparse.Namespace) -> int:
    if args.stack and not args.aws:
        args.usage_error("--stack needs --aws")
    if args.limit is not None and args.limit < 1:
        args.usage_error("--limit must be at least 1")
    settings = settings_from(args)
    bootstrap = Bootstrap(settings)
    config = load_config(settings)
    since = bootstrap.clock.now() - timedelta(seconds=args.since)
    stack = args.stack or STACK_NAME
    deployed = None
    if args.aws:
        from mxgate.adapters.aws.operator import operator_aws  # noqa: PLC0415 -- boto3 on demand
        from mxgate.adapters.aws.stack import DeployedStack  # noqa: PLC0415

        deployed = DeployedStack(operator_aws(args))
    old, new = configurations(
        args,
        config,
        settings.config,
        deployed.parameters() if deployed is not None and args.stack else None,
        stack,
    )
    if deployed is not None:
        source, history = aws_history(deployed, old, since, args.limit)
    else:
        source = str(bootstrap.paths.history)
        history = local_history(bootstrap.history(), since, args.limit)
    facts = ReplayFacts(
        authenticator=None if args.no_auth else bootstrap.authenticator(),
        limits=config.message_limits,
        analyzers=bootstrap.blocklists(old.mail_manager, new.mail_manager),
    )
    comparison = run_replay(
        history, old, new, facts=facts, book=bootstrap.address_list_files(), progress=Progress()
    )
    if args.json:
        print_json(report_json(comparison, old, new, source))
    else:
        print("\n".join(report_lines(comparison, old, new, source)))
    return 0


def aws_history(
    deployed: DeployedStack, old: Configuration, since: datetime, limit: int | None
) -> tuple[str, Iterator[StoredMessage]]:
    from mxgate.adapters.aws.history import RawBucketHistory  # noqa: PLC0415 -- boto3 on demand

    bucket = deployed.operator.names.need("raw_bucket")
    added = [f for rule_set in old.mail_manager.rule_sets.values() for f in added_fields(rule_set)]
    from mxgate.adapters.aws.arrivals import DynamoArrivals  # noqa: PLC0415
    from mxgate.clock import SystemClock  # noqa: PLC0415

    arrivals = DynamoArrivals(
        deployed.operator.client("dynamodb"),
        deployed.operator.names.need("state_table"),
        SystemClock(),
    )
    history = RawBucketHistory(
        deployed.operator.client("s3"), bucket, "raw/", arrivals=arrivals, added=added
    )
    return f"s3://{bucket}/raw/", history.messages(since, limit)


# ----------------------------------------------------------------------------- the report


def _decision_json(decision: Decision | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    return {
        "outcome": decision.outcome,
        "route": decision.route,
        "why": decision.why,
        "actions": list(decision.actions),
        "rules": list(decision.rules),
    }


def _change_json(change: Change) -> dict[str, Any]:
    envelope = change.message.envelope
    either = change.new or change.old
    assert either is not None
    return {
        "message_id": envelope.message_id,
        "received_at": change.message.received_at.isoformat(),
        "mail_from": envelope.mail_from,
        "subject": change.message.subject,
        "recipient": either.recipient,
        "accepted": either.accepted,
        "old": _decision_json(change.old),
        "new": _decision_json(change.new),
        "rule_trail": change.differing_rules(),
    }


def report_json(
    comparison: Comparison, old: Configuration, new: Configuration, source: str
) -> dict[str, Any]:
    return {
        "replayed": {
            "source": source,
            "messages": comparison.messages,
            "recipients": comparison.recipients,
            "first": comparison.first.isoformat() if comparison.first else None,
            "last": comparison.last.isoformat() if comparison.last else None,
        },
        "old": {"template": old.label},
        "new": {"template": new.label},
        "changed": [_change_json(c) for c in comparison.changes],
        "unchanged": comparison.recipients - len(comparison.changes),
    }


def _shown(decision: Decision | None) -> str:
    if decision is None:
        return "(not a recipient)"
    rules = ", ".join(decision.rules) or "no rule"
    return f"{decision.shown}: {decision.why}; rules {rules}"


def report_lines(
    comparison: Comparison, old: Configuration, new: Configuration, source: str
) -> list[str]:
    span = (
        f" received {comparison.first:%Y-%m-%d %H:%M} .. {comparison.last:%Y-%m-%d %H:%M} UTC"
        if comparison.first and comparison.last
        else ""
    )
    lines = [
        (
            f"Replayed {comparison.messages} messages ({comparison.recipients} recipients){span} "
            f"from {source}"
        ),
        f"  old: {old.label}",
        f"  new: {new.label}",
    ]
    count = len(comparison.changes)
    if not comparison.messages:
        lines.append(
            "No message to replay in that time: the gateway keeps each message it accepts "
            "for `history: keep` (7d) of config/local.yaml; `mxgate demo --traffic N` makes some."
        )
        return lines
    if not count:
        lines.append("No recipient's decision would change.")
        return lines
    lines.append(f"{count} recipient{'s' if count != 1 else ''} would change:")
    for change in comparison.changes:
        envelope = change.message.envelope
        lines += [
            "",
            (
                f"{change.recipient}  from <{envelope.mail_from}> {change.message.subject!r} "
                f"{change.message.received_at:%Y-%m-%d %H:%M} ({envelope.message_id})"
            ),
            f"  old: {_shown(change.old)}",
            f"  new: {_shown(change.new)}",
        ]
        lines += [f"    {line}" for line in change.differing_rules()]
    return lines
