"""Maildir names: one mailbox per recipient, never shared, and the recipient read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxgate.adapters.local.maildir import Maildir, mailbox_name, recipient_of
from mxgate.message.raw import RawMessage

PAIRS = [
    ("jürg@nutrition.co", "j_rg@nutrition.co"),
    ("user%o@nutrition.co", "user_o@nutrition.co"),
    ("a/b@nutrition.co", "a_b@nutrition.co"),
    ("a b@nutrition.co", "a_b@nutrition.co"),
    ("~x@nutrition.co", "_x@nutrition.co"),
    ("é@nutrition.co", "%c3%a9@nutrition.co"),  # an encoding as a name is itself encoded
]
ADDRESSES = [
    "alice@nutrition.co",
    "alice+news@nutrition.co",
    "o'brien@nutrition.co",
    '"quoted local"@nutrition.co',
    ".hidden@nutrition.co",
    "..@nutrition.co",
    "ü.ñ@customer-support.nutrition.co",
    "x\x00y@nutrition.co",
    *[a for pair in PAIRS for a in pair],
]


@pytest.mark.parametrize(("one", "other"), PAIRS)
def test_different_recipients_never_share_a_mailbox(one, other):
    assert mailbox_name(one) != mailbox_name(other)


def test_plain_addresses_stay_readable_and_case_does_not_matter():
    assert mailbox_name("alice@nutrition.co") == "alice@nutrition.co"
    assert mailbox_name("Alice+News@Nutrition.CO") == "alice+news@nutrition.co"
    assert mailbox_name("jürg@nutrition.co") == "j%c3%bcrg@nutrition.co"
    assert mailbox_name("user%o@nutrition.co") == "user%25o@nutrition.co"


@pytest.mark.parametrize("address", ADDRESSES)
def test_a_name_gives_its_recipient_back_and_stays_in_its_directory(address):
    name = mailbox_name(address)
    assert recipient_of(name) == address.casefold()
    assert "/" not in name
    assert "\\" not in name
    assert not name.startswith(".")
    assert len(name.encode()) <= 255


def test_an_address_too_long_for_a_file_name_gets_a_digest():
    long_one, long_other = "ü" * 200 + "a@nutrition.co", "ü" * 200 + "b@nutrition.co"
    name = mailbox_name(long_one)
    assert len(name.encode()) <= 255
    assert "~" in name
    assert name != mailbox_name(long_other)
    assert recipient_of(name).startswith("ü" * 20)


def test_mail_for_colliding_recipients_lands_apart_and_control_bytes_are_never_raw(tmp_path):
    maildir = Maildir(tmp_path)
    for recipient in ("jürg@nutrition.co", "j_rg@nutrition.co", "bo\x07b@nutrition.co"):
        maildir.deliver(
            "sender@example.org", recipient, RawMessage.of(b"Subject: hi\r\n\r\nhello\r\n")
        )
    boxes = sorted(p.name for p in tmp_path.iterdir())
    assert boxes == ["bo%07b@nutrition.co", "j%c3%bcrg@nutrition.co", "j_rg@nutrition.co"]
    (stored,) = (tmp_path / "bo%07b@nutrition.co" / "new").iterdir()
    assert stored.read_bytes().startswith(
        b"Return-Path: <sender@example.org>\r\nDelivered-To: bo\\x07b@nutrition.co\r\n"
    )


def test_a_message_stored_while_another_makes_the_new_mailbox_finds_its_new_folder(
    tmp_path, monkeypatch
):
    """Two sessions' first messages to one recipient: the second may write under tmp/ as soon
    as the first has made it, and its rename into new/ must then find new/ (it was refused
    452 when tmp/ came first)."""
    maildir = Maildir(tmp_path)
    message = RawMessage.of(b"Subject: hi\r\n\r\nhello\r\n")
    made = Path.mkdir
    stored = []

    def mkdir(path, *args, **kwargs):
        made(path, *args, **kwargs)
        if path.name == "tmp" and not stored:  # the other thread's store, just then
            stored.append(maildir.deliver("", "alice@nutrition.co", message))

    monkeypatch.setattr(Path, "mkdir", mkdir)
    first = maildir.deliver("", "alice@nutrition.co", message)
    assert {p.name for p in (tmp_path / "alice@nutrition.co" / "new").iterdir()} == {
        first.name,
        stored[0].name,
    }
