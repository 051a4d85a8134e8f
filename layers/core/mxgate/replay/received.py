"""A stored message as it was received. Mail Manager's WriteToS3 stores the message after the
rule set's AddHeader actions (the local emulator prepends each field); replaying that copy
would meet our own fields (a loop guard's mark, say) as if the sender had written them. So the
fields the deployed rule set adds are taken off again: the first occurrence of each, in the
header section; a second one (mail that really came back) stays."""

from __future__ import annotations

from collections.abc import Sequence

from mxgate.mailmanager.models import RuleSet
from mxgate.message.headers import header_fields, without_fields


def added_fields(rule_set: RuleSet) -> list[tuple[str, str]]:
    """Every (name, value) the rule set's AddHeader actions add."""
    return [
        (action.AddHeader.HeaderName, action.AddHeader.HeaderValue)
        for rule in rule_set.Rules
        for action in rule.Actions
        if action.AddHeader is not None
    ]


def as_received(raw: bytes, added: Sequence[tuple[str, str]]) -> bytes:
    """`raw` without the first field of each (name, value) pair in `added`."""
    wanted = [(name.lower().encode(), value.encode()) for name, value in added]
    doomed = []
    for name, start, end in header_fields(raw):
        value = b" ".join(raw[start:end].split(b":", 1)[1].split())
        if (name.lower(), value) in wanted:
            wanted.remove((name.lower(), value))
            doomed.append((start, end))
    return without_fields(raw, doomed)
