"""MAIL FROM / RCPT TO paths: the gateway's quick match of `<local@domain>` answers exactly
as aiosmtpd's RFC 5322 parser does, for the common form and everything near it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from aiosmtpd.smtp import SMTP

from mxgate.local.smtp import _PLAIN_PATH, ExactSMTP

PATHS = [
    "<a@b.example>",
    "<alice@nutrition.co>",
    "<A.B+tag@Sub.Example.COM> SIZE=5120",
    "<bench@load.example>  BODY=8BITMIME SMTPUTF8",
    "<bench@load.example>\tSIZE=1",
    " <a@b.example>",
    "<a_b=c/d?e^f`g{h|i}j~k!l#m$n%o&p'q*r@d-e.f>",
    "<>",
    "<> SIZE=1",
    "<a@b.example>(a comment)",
    "<a@b.example> (a comment) SIZE=1",
    "<a@b.example> SIZE=1 (a comment)",
    "<a@b.example>x",
    "<a@b.example> <c@d.example>",
    "<a@b.example> SIZE=1 <x>",
    '<"quoted local"@b.example>',
    "<a..b@c.example>",
    "<.a@c.example>",
    "<a.@c.example>",
    "<a@[192.0.2.1]>",
    "<@relay.example:a@b.example>",
    "<a@b..example>",
    "<a@-b.example>",
    "<a@b.example",
    "a@b.example",
    "<jöran@bücher.example>",
    "<a b@c.example>",
    "<a@b.example>>",
    "<a@b.example> SIZE=1 ",
    "<a@b.example> \\",
    '<a@b.example> "x"',
]


@pytest.fixture(scope="module")
def session() -> ExactSMTP:
    async def made() -> ExactSMTP:
        return ExactSMTP(SimpleNamespace(), hostname="mx.test")

    return asyncio.run(made())


def outcome(parse: Callable[[str], object], arg: str) -> object:
    """What `parse` answers, or the exception it raises (the standard library's parser raises
    IndexError on some paths: aiosmtpd's answer then is that exception, and so is ours)."""
    try:
        return parse(arg)
    except Exception as error:  # noqa: BLE001 -- compared, not handled
        return type(error)


def aiosmtpd_parse(arg: str) -> object:
    return SMTP._getaddr(SimpleNamespace(local_part_limit=0), arg)


@pytest.mark.parametrize("arg", PATHS)
def test_the_quick_match_answers_as_aiosmtpds_parser(session, arg):
    assert outcome(session._getaddr, arg) == outcome(aiosmtpd_parse, arg)


def test_random_paths_near_the_common_form_answer_alike(session):
    """Paths put together from the common form's parts and the odd ones around it."""
    rng = random.Random(12)
    local = ["a", "b0", "x+y", "_", "=", "'", "-"] * 4 + [".", ".", "é", '"', " ", "(", "@"]
    domain = ["ex", "ample", "9", "-"] * 4 + [".", ".", ".", "[1]", "é", ">"]
    tail = ["", "", " SIZE=1", "  BODY=8BITMIME", "\tX", " (c)", "(c)", " x", "x", " ", '"q"', "<"]
    matched = 0
    for _ in range(600):
        arg = "<{}@{}>{}".format(
            "".join(rng.choices(local, k=rng.randint(1, 4))),
            "".join(rng.choices(domain, k=rng.randint(1, 4))),
            "".join(rng.choices(tail, k=rng.randint(0, 2))),
        )
        matched += _PLAIN_PATH.fullmatch(arg) is not None
        assert outcome(session._getaddr, arg) == outcome(aiosmtpd_parse, arg), arg
    assert matched > 50  # the quick match was tried, not only the parser
