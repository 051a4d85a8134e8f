"""MAIL FROM and RCPT TO paths of outbound SMTP: a plain address quoted at once, any other
through smtplib's parser; both give what smtplib.quoteaddr gives."""

from __future__ import annotations

import random
import smtplib

import pytest

from mxgate.delivery.smtp import _PLAIN_ADDRESS, quoted_path

ADDRESSES = [
    "alice@nutrition.co",
    "first.last+tag@mail.example.org",
    "o'brien@shop.example",
    "a/b=c?d^e`f{g|h}i~j#k$l%m&n*o@x-y.example",
    "",  # the null sender
    "<already@quoted.example>",
    "Name <name@example.org>",
    '"quoted local"@example.org',
    "dots..twice@example.org",
    ".leading@example.org",
    "user@[192.0.2.1]",
    "jürgen@münchen.example",
    "no-domain",
    "user@domain.",
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_every_address_is_quoted_as_smtplib_quotes_it(address):
    assert quoted_path(address) == smtplib.quoteaddr(address)


def test_the_usual_address_takes_the_fast_path():
    assert _PLAIN_ADDRESS.fullmatch("first.last+tag@mail.example.org")
    assert not _PLAIN_ADDRESS.fullmatch('"quoted local"@example.org')


def test_any_text_is_quoted_as_smtplib_quotes_it():
    """Address-shaped text (atoms, dots, an @, and now and then a character that is not
    atext), a third or so of it plain."""
    rng = random.Random(12)
    atext, other = "ab0+-/=%'_~", '.<> \\()[]:,;"ü'
    plain = 0
    for _ in range(5000):
        local, domain = (
            "".join(rng.choice(usual if rng.random() < 0.95 else other) for _ in range(n))
            for usual, n in ((atext + ".", rng.randint(0, 8)), ("ab0-.", rng.randint(0, 8)))
        )
        address = f"{local}@{domain}" if rng.random() < 0.9 else local
        plain += bool(_PLAIN_ADDRESS.fullmatch(address))
        assert quoted_path(address) == smtplib.quoteaddr(address), address
    assert plain > 500
