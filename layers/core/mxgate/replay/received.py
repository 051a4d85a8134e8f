"""A stored message as it was received. Mail Manager's WriteToS3 stores the message after the
rule set's AddHeader actions (the local emulator prepends each field); replaying that copy
would meet our own fields (a loop guard's mark, say) as if the sender had written them. So the
fields the deployed rule set adds are taken off again: the first occurrence of each, in the
header section; a second one (mail that really came back) stays."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from mxgate.mailmanager.models import RuleSet


def added_fields(rule_set: RuleSet) -> list[tuple[str, str]]:
    """Every (name, value) the rule set's AddHeader actions add."""
    return [
        (action.AddHeader.HeaderName, action.AddHeader.HeaderValue)
        for rule in rule_set.Rules
        for action in rule.Actions
        if action.AddHeader is not None
    ]


def _fields(header: bytes) -> Iterator[bytes]:
    """The header section's fields, each with its folded lines and line ends."""
    field = b""
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and field:
            field += line
            continue
        if field:
            yield field
        field = line
    if field:
        yield field


def as_received(raw: bytes, added: Sequence[tuple[str, str]]) -> bytes:
    """`raw` without the first field of each (name, value) pair in `added`."""
    end = raw.find(b"\r\n\r\n")
    cut = 4 if end >= 0 else 2
    if end < 0:
        end = raw.find(b"\n\n")
    if end < 0 or not added:
        return raw
    header, body = raw[: end + cut // 2], raw[end + cut // 2 :]
    wanted = [(name.lower().encode(), value.encode()) for name, value in added]
    kept = []
    for field in _fields(header):
        name, colon, value = field.partition(b":")
        pair = (name.strip().lower(), b" ".join(value.split()))
        if colon and pair in wanted:
            wanted.remove(pair)
            continue
        kept.append(field)
    return b"".join(kept) + body
