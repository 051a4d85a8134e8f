"""The sender policy: what to do with mail whose From is not a verified SES identity.

SES sends only from verified identities (From, Sender and Return-Path are checked). A route
either refuses such mail or rewrites it: the original From header field is renamed
`X-Original-From` (its bytes untouched), a new `From: "<name> via <domain>" <rewrite address>`
is prepended, and `Reply-To` carries the original From unless the message has a Reply-To of
its own, so replies still reach the real sender. Sender and Return-Path are renamed the same
way. The rest of the message is the original bytes.

This breaks the original DKIM signature (From is always signed) and the original domain's
DMARC alignment: the recipient sees the gateway's domain as the author's, signed by SES for
that domain. Routes that must keep the original signature use SMTP submission instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import formataddr

from mxgate.errors import PolicyError
from mxgate.message.headers import format_field, header_block_end, line_ending
from mxgate.message.parse import addresses, parse_header_section
from mxgate.routing.routes import Routes

_RENAMED = {
    "from": "X-Original-From",
    "sender": "X-Original-Sender",
    "return-path": "X-Original-Return-Path",
}


@dataclass(frozen=True, slots=True)
class SenderDecision:
    raw: bytes
    rewritten: bool
    detail: str = ""


def _rename_fields(header: bytes, names: dict[str, str]) -> bytes:
    """Rename header fields in place (continuation lines stay with their field)."""

    if not names:
        return header

    def rename(match: re.Match[bytes]) -> bytes:
        return names[match.group(1).decode("ascii").casefold()].encode("ascii") + b":"

    pattern = re.compile(
        rb"^(" + b"|".join(re.escape(n.encode()) for n in names) + rb")[ \t]*:",
        re.IGNORECASE | re.MULTILINE,
    )
    return pattern.sub(rename, header)


def apply_sender_policy(raw: bytes, route: str, routes: Routes) -> SenderDecision:
    """The message as SES may send it from this route, or PolicyError if the route refuses."""
    head = parse_header_section(raw)
    defects: list[str] = []
    authors = addresses(head, "from", defects)
    senders = addresses(head, "sender", defects)
    return_paths = [
        v.strip().strip("<>") for v in head.get_all("return-path", []) if v.strip().strip("<>")
    ]
    unverified = [
        a
        for a in [*(x.address for x in authors), *(x.address for x in senders), *return_paths]
        if not routes.is_verified(a)
    ]
    if authors and not unverified:
        return SenderDecision(raw, rewritten=False)
    original = authors[0] if authors else None
    shown = original.address if original else "(no From)"
    policy = routes.policy(route)
    if policy.unverified_sender == "refuse":
        raise PolicyError(
            f"sender {shown} is not a verified SES identity and route {route} refuses to rewrite it"
        )
    rewrite = routes.rewrite_address(route)
    author_name = (original.name or original.address) if original else "unknown sender"
    domain = rewrite.rpartition("@")[2]
    new_from = formataddr((f"{author_name} via {domain}", rewrite))  # RFC 2047 if not ASCII
    end = header_block_end(raw)
    present = {k.casefold() for k in head}
    header = _rename_fields(raw[:end], {k: v for k, v in _RENAMED.items() if k in present})
    fields = [("From", new_from)]
    if "reply-to" not in present and original is not None:
        fields.append(("Reply-To", formataddr((original.name, original.address))))
    ending = line_ending(raw)
    block = b"".join(format_field(name, value) for name, value in fields)
    if ending != b"\r\n":
        block = block.replace(b"\r\n", ending)
    return SenderDecision(
        block + header + raw[end:],
        rewritten=True,
        detail=f"From {shown} rewritten to {rewrite}",
    )
