"""`mxgate trace`: a message's timeline, or the recent messages."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from mxgate.adapters.local.state import SqliteState, Waiting
from mxgate.cli import COMMANDS
from mxgate.cli.common import (
    add_settings_arguments,
    moment_argument,
    positive_int,
    print_json,
    resolved,
    settings_from,
    table,
)
from mxgate.errors import ConfigError
from mxgate.local.bootstrap import Bootstrap
from mxgate.local.settings import Paths
from mxgate.local.setup import state_paths
from mxgate.local.spool import message_events, not_yet_taken, spooled_events, untaken
from mxgate.message.text import shown
from mxgate.records import DeferredDelivery, DeferredProcessing, Stage, StepRetry, TimelineEvent
from mxgate.tracking import OUTCOME_CHOICES, TraceQuery, track

DEFAULT_LIMIT = 20  # one screen; the listing says when there are more
MAX_FOUND = 1000  # the most matches a tracking search returns (TraceQuery.limit)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "trace",
        help=COMMANDS["trace"].help,
        description="Without MESSAGE-ID, list recent messages with their outcome (or, with "
        "--from, --to, --subject, --since, --until or --outcome, the messages that match); with "
        "one (or a unique prefix), show its timeline: accepted, rules, stored, parsed, "
        "classified, and each recipient's terminal state, with times.",
    )
    add_settings_arguments(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("message_id", nargs="?", metavar="MESSAGE-ID")
    which.add_argument(
        "--last", action="store_true", help="the timeline of the most recent message"
    )
    search = parser.add_argument_group(
        "tracking search (each text a case-insensitive substring; all given must hold)"
    )
    search.add_argument("--from", dest="from_", metavar="TEXT", help="envelope sender or From")
    search.add_argument("--to", metavar="TEXT", help="any recipient")
    search.add_argument("--subject", metavar="TEXT")
    search.add_argument("--since", type=moment_argument, help="a time, or a duration back (1h, 7d)")
    search.add_argument("--until", type=moment_argument, help="a time, or a duration back")
    search.add_argument(
        "--outcome", choices=OUTCOME_CHOICES, help="some recipient ended so (or is in progress)"
    )
    how_many = parser.add_mutually_exclusive_group()
    how_many.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIMIT,
        help=f"how many recent messages to list (default {DEFAULT_LIMIT})",
    )
    how_many.add_argument("--all", action="store_true", help="list every message")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=trace)


def summary(
    state: SqliteState, message_id: str, events: list[TimelineEvent] | None = None
) -> dict[str, object]:
    """One line of the listing (`events`: the message's, when not the state's: a spool file's)."""
    events = state.events(message_id) if events is None else events
    states = state.states(message_id)
    outcomes = Counter(s.outcome.value for s in states)
    accepted = next((e for e in events if e.stage is Stage.ACCEPTED), None)
    # every recipient the rule set saw (a ReplaceRecipient's new addresses too), once however
    # often it ran (a replay after a crash runs it again)
    seen = {e.recipient.casefold() for e in events if e.stage is Stage.RULES and e.recipient}
    settled = {s.recipient.casefold() for s in states}
    waiting = len(state.deferred(message_id))
    return {
        "message_id": message_id,
        "accepted_at": accepted.at.isoformat() if accepted else None,
        "detail": accepted.detail if accepted else "",
        "outcomes": dict(outcomes),
        "deferred": waiting,
        "in_progress": bool(waiting) or bool(seen - settled) or not (seen or settled),
    }


def _outcome_text(row: dict[str, object]) -> str:
    if row["in_progress"]:
        return f"deferred ({row['deferred']} deliveries)" if row["deferred"] else "in progress"
    outcomes = row["outcomes"]
    assert isinstance(outcomes, dict)
    return ", ".join(f"{count} {outcome}" for outcome, count in outcomes.items())


def _search(state: SqliteState, query: TraceQuery, *, json_out: bool) -> int:
    found = track(state, state, query)
    if json_out:
        print_json({"messages": [m.model_dump(mode="json", by_alias=True) for m in found]})
        return 0
    if not found:
        print("no message matches")
        return 0
    print(
        table(
            [
                [
                    m.message_id,
                    m.parsed_at.isoformat(timespec="seconds")[:19],
                    m.envelope_sender,
                    ", ".join(m.recipients),
                    m.subject[:40],
                    ", ".join(
                        f"{count} {outcome}"
                        for outcome, count in Counter(m.outcomes.values()).items()
                    )
                    + (" (in progress)" if m.in_progress else ""),
                ]
                for m in found
            ],
            ["MESSAGE-ID", "PARSED (UTC)", "ENVELOPE FROM", "RECIPIENTS", "SUBJECT", "OUTCOME"],
        )
    )
    return 0


def _waiting_json(waiting: Waiting) -> dict[str, object]:
    record = waiting.record
    return {
        "id": record.record_id,
        "running": waiting.running,
        "message_id": record.message_id,
        **record.model_dump(mode="json"),
    }


def _waiting_line(waiting: Waiting) -> str:
    """What a record of the deferred queue waits for: a delivery, the message itself (to run
    through Process again), or a rule set retry."""
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
    if isinstance(record, StepRetry):
        task = record.execution.state
        whom = f" for {', '.join(record.recipients)}" if record.recipients else ""
        return f"waiting: {task} retry {record.attempt}{whom}: {when}: {record.error}"
    if isinstance(record, DeferredProcessing):
        deferral = record.deferral
        return f"deferred: the message, to run through Process again: {when}" + (
            f", deferral {deferral.attempts}: {deferral.last_error}" if deferral else ""
        )
    what = "redrive" if record.is_redrive else f"retry {record.attempts}"
    return f"deferred: rule set {what} for {', '.join(record.recipients)}: {when}" + (
        f": {record.last_error}" if record.last_error else ""
    )


def trace(args: argparse.Namespace) -> int:
    bootstrap = Bootstrap(settings_from(args), clock=args.clock)
    paths = state_paths(bootstrap.settings)
    state = bootstrap.state()

    def waiting() -> list[Path]:
        """Accepted, newest first, that no worker has taken yet (no event in the timeline)."""
        return untaken(paths.spool, lambda message_id: bool(state.find(message_id)))

    if args.last:
        last = [p.stem for p in waiting()[:1]] or state.recent(1)
        if not last:
            raise ConfigError(f"no messages yet in {paths.state_db}")
        args.message_id = last[0]
    query = TraceQuery(
        from_=args.from_,
        to=args.to,
        subject=args.subject,
        since=resolved(args.since, bootstrap.clock),
        until=resolved(args.until, bootstrap.clock),
        outcome=args.outcome,
        limit=MAX_FOUND if args.all else min(args.limit, MAX_FOUND),
    )
    if args.message_id is None and query.any_filter:
        return _search(state, query, json_out=args.json)
    if args.message_id is None:
        spooled = waiting()
        total = state.accepted_count() + len(spooled)
        limit = total if args.all else args.limit
        rows = [summary(state, e.message_id, [e]) for e in spooled_events(spooled[:limit])]
        rows += [summary(state, m) for m in state.recent(limit - len(rows))]
        if args.json:
            print_json({"messages": rows, "total": total})
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
        if total > len(rows):
            print(f"the {len(rows)} most recent of {total} messages; --limit N or --all for more")
        return 0
    return _timeline(state, paths, args.message_id, json_out=args.json)


def _timeline(state: SqliteState, paths: Paths, wanted: str, *, json_out: bool) -> int:
    """One message's timeline, recipients and waiting work (`wanted`: its id or a prefix)."""
    matches = state.find(wanted)
    spooled = [] if matches else not_yet_taken(paths.spool, wanted)
    if not matches and not spooled:  # a worker may have taken it meanwhile
        matches = state.find(wanted)
    found = matches or [e.message_id for e in spooled]
    if not found:
        raise ConfigError(f"no message {wanted!r} in {paths.state_db}")
    if len(found) > 1:
        raise ConfigError(f"{wanted!r} is ambiguous: {', '.join(found)}")
    message_id = found[0]
    events = message_events(state, paths.spool, message_id)
    states = state.states(message_id)
    deferred = state.deferred(message_id)
    if json_out:
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
        who = f"{shown(event.recipient)}  " if event.recipient else ""
        when = event.at.isoformat(timespec="milliseconds")
        print(f"  {when} {offset:>11}  {event.stage.value:<13} {who}{shown(event.detail)}")
    if states:
        print("recipients:")
        for s in states:
            recipient, detail = shown(s.recipient), shown(s.detail)
            print(f"  {recipient:<40} {s.outcome.value:<14} {s.route:<10} {detail}")
    else:
        print("recipients: none settled yet (in progress)")
    for waiting in deferred:
        print(_waiting_line(waiting))
    return 0
