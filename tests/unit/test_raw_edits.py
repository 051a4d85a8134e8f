"""Raw message edits, the spool file and message ids."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mxgate.ids import _CROCKFORD, new_message_id
from mxgate.local.spool import READ_WHOLE, Spool
from mxgate.message.headers import header_block_end, prepend_headers
from mxgate.records import Envelope


def test_prepend_keeps_every_original_byte_and_the_line_ending():
    crlf = b"Subject: x\r\n\r\nbody\r\n"
    assert prepend_headers(crlf, [("X-A", "1"), ("X-B", "2")]) == b"X-A: 1\r\nX-B: 2\r\n" + crlf
    lf = b"Subject: x\n\nbody\n"
    assert prepend_headers(lf, [("X-A", "1")]) == b"X-A: 1\n" + lf


def test_prepend_encodes_non_ascii_values():
    out = prepend_headers(b"\r\n", [("X-Note", "café")])
    assert out.isascii()
    assert out.startswith(b"X-Note: =?utf-8?")


def test_header_block_end_takes_the_first_blank_line():
    assert header_block_end(b"A: 1\n\nB\r\n\r\n") == 6
    assert header_block_end(b"A: 1\r\n\r\nbody") == 8
    assert header_block_end(b"A: 1") == 4


def test_spool_round_trip(tmp_path):
    spool = Spool(tmp_path)
    envelope = Envelope(message_id="01ABC", mail_from="", recipients=["a@x.example"])
    raw = b"\x00\xffbinary\r\n.\r\n"
    path = spool.write(envelope, raw)
    assert spool.pending() == [path]
    read, message = spool.read(path)
    assert (read, message.read()) == (envelope, raw)
    spool.remove(path)
    assert spool.pending() == []


def test_a_spool_id_collision_is_refused_and_the_first_message_kept(tmp_path):
    spool = Spool(tmp_path)
    envelope = Envelope(message_id="01SAME", mail_from="", recipients=["a@x.example"])
    path = spool.write(envelope, b"Subject: first\r\n\r\n")
    with pytest.raises(FileExistsError):  # answered 451: the client sends it again
        spool.write(envelope.model_copy(update={"recipients": ["b@x.example"]}), b"second")
    assert spool.pending() == [path]
    assert spool.read(path)[1].read() == b"Subject: first\r\n\r\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01SAME.msg"]  # no partial left


def test_a_small_spooled_message_is_read_once_a_large_one_from_the_file_on_use(tmp_path):
    spool = Spool(tmp_path)
    envelope = Envelope(message_id="01SMALL", mail_from="", recipients=["a@x.example"])
    small = b"Subject: small\r\n\r\n" + b"x" * (READ_WHOLE - 100)
    path = spool.write(envelope, small)
    _, message = spool.read(path)
    spool.remove(path)  # read whole: the file is not opened again
    assert message.read() == small
    large = b"Subject: large\r\n\r\n" + b"y" * READ_WHOLE
    path = spool.write(envelope.model_copy(update={"message_id": "01LARGE"}), large)
    _, message = spool.read(path)
    assert message.header == b"Subject: large\r\n\r\n"  # only the header section in memory
    path.write_bytes(path.read_bytes().replace(b"y", b"z"))  # the body comes from the file
    assert message.read() == large.replace(b"y", b"z")


def test_message_ids_sort_by_time_and_do_not_repeat():
    early = new_message_id(datetime(2026, 1, 1, tzinfo=UTC))
    late = new_message_id(datetime(2026, 1, 2, tzinfo=UTC))
    assert len(early) == 26
    assert early < late
    assert len({new_message_id(datetime(2026, 1, 1, tzinfo=UTC)) for _ in range(1000)}) == 1000


def test_a_message_id_is_its_milliseconds_then_its_randomness_in_crockford_base32():
    at = datetime(2026, 12, 1, 19, 30, 15, 123000, tzinfo=UTC)
    randomness = (0xDEADBEEF << 48) | 0x0123456789AB
    message_id = new_message_id(at, randomness)
    value = 0
    for char in message_id:
        value = value * 32 + _CROCKFORD.index(char)
    assert value == (int(at.timestamp() * 1000) << 80) | randomness
    assert new_message_id(at, 0).endswith("0" * 16)
    assert new_message_id(at, (1 << 80) - 1).endswith("Z" * 16)
