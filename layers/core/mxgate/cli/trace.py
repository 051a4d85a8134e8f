"""`mxgate trace`: a message's timeline, or the recent messages."""

from __future__ import annotations

import argparse
from collections import Counter

from mxgate.adapters.local.state import SqliteState, Waiting
from mxgate.cli.common import add_settings_arguments, print_json, settings_from, table
from mxgate.errors import ConfigError
from mxgate.local.bootstrap import Bootstrap
from mxgate.records import DeferredDelivery, Stage


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "trace",
        help="show what happened to a message (or list recent messages)",
        description="Without MESSAGE-ID, list recent messages with their outcome; with one "
        "(or a unique prefix), show its timeline: accepted, rules, stored, parsed, classified, "
        "and each recipient's terminal state, with times.",
    )
    add_settings_arguments(parser)
    parser.add_argument("message_id", nargs="?", metavar="MESSAGE-ID")
    parser.add_argument(
        "--limit", type=int, default=20, help="how many recent messages (default 20)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=trace)


def summary(state: SqliteState, message_id: str) -> dict[str, object]:
    events = state.events(message_id)
    outcomes = Counter(s.outcome.value for s in state.states(message_id))
    accepted = next((e for e in events if e.stage is Stage.ACCEPTED), None)
    through_rules = sum(1 for e in events if e.stage is Stage.RULES)
    return {
        "message_id": message_id,
        "accepted_at": accepted.at.isoformat() if accepted else None,
        "detail": accepted.detail if accepted else "",
        "outcomes": dict(outcomes),
        "deferred": len(state.deferred(message_id)),
        # a recipient replaced by several addresses settles each: never fewer states than this
        "in_progress": through_rules == 0 or sum(outcomes.values()) < through_rules,
    }


def _outcome_text(row: dict[str, object]) -> str:
    if row["in_progress"]:
        return f"deferred ({row['deferred']} deliveries)" if row["deferred"] else "in progress"
    outcomes = row["outcomes"]
    assert isinstance(outcomes, dict)
    return ", ".join(f"{count} {outcome}" for outcome, count in outcomes.items())


def _waiting_json(waiting: Waiting) -> dict[str, object]:
    record = waiting.record
    return {
        "id": record.record_id,
        "running": waiting.running,
        "message_id": record.message_id,
        **record.model_dump(mode="json"),
    }


def _waiting_line(waiting: Waiting) -> str:
    """What a record of the deferred queue waits for: a delivery, or a rule set retry."""
    record = waiting.record
    when = (
        "running now"
        if waiting.running
        else f"next attempt {record.due_at.strftime('%Y-%m-%dT%H:%M:%S')}"
    )
    if isinstance(record, DeferredDelivery):
        delivery, deferral = record.delivery, record.delivery.deferral
        return (
            f"deferred: {delivery.kind} {delivery.destination} {', '.join(delivery.recipients)}: "
            + when
            + (f", deferral {deferral.attempts}: {deferral.last_error}" if deferral else "")
        )
    what = "redrive" if record.is_redrive else f"retry {record.attempts}"
    return f"deferred: rule set {what} for {', '.join(record.recipients)}: {when}" + (
        f": {record.last_error}" if record.last_error else ""
    )


def trace(args: argparse.Namespace) -> int:
    bootstrap = Bootstrap(settings_from(args))
    paths = bootstrap.paths
    if not paths.state_db.exists():
        raise ConfigError(
            f"no gateway state under {bootstrap.settings.home} (has `mxgate run` accepted mail?)"
        )
    state = bootstrap.state()
    if args.message_id is None:
        rows = [summary(state, m) for m in state.recent(args.limit)]
        if args.json:
            print_json({"messages": rows})
            return 0
        if not rows:
            print("no messages yet")
            return 0
        print(
            table(
                [
                    [
                        str(r["message_id"]),
                        str(r["accepted_at"] or "")[:19],
                        _outcome_text(r),
                        str(r["detail"]),
                    ]
                    for r in rows
                ],
                ["MESSAGE-ID", "ACCEPTED (UTC)", "OUTCOME", "DETAIL"],
            )
        )
        return 0
    matches = state.find(args.message_id)
    if not matches:
        raise ConfigError(f"no message {args.message_id!r} in {paths.state_db}")
    if len(matches) > 1:
        raise ConfigError(f"{args.message_id!r} is ambiguous: {', '.join(matches)}")
    message_id = matches[0]
    events = state.events(message_id)
    states = state.states(message_id)
    deferred = state.deferred(message_id)
    if args.json:
        print_json(
            {
                "message_id": message_id,
                "events": [e.model_dump(mode="json") for e in events],
                "recipients": [s.model_dump(mode="json") for s in states],
                "deferred": [_waiting_json(w) for w in deferred],
            }
        )
        return 0
    print(f"message {message_id}")
    start = events[0].at if events else None
    for event in events:
        offset = f"+{(event.at - start).total_seconds():.3f}s" if start else ""
        who = f"{event.recipient}  " if event.recipient else ""
        when = event.at.isoformat(timespec="milliseconds")
        print(f"  {when} {offset:>11}  {event.stage.value:<13} {who}{event.detail}")
    if states:
        print("recipients:")
        for s in states:
            print(f"  {s.recipient:<40} {s.outcome.value:<14} {s.route:<10} {s.detail}")
    else:
        print("recipients: none settled yet (in progress)")
    for waiting in deferred:
        print(_waiting_line(waiting))
    return 0
