"""Raw message edits, the spool file and message ids."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from mxgate.ids import _CROCKFORD, new_message_id
from mxgate.local.spool import MAX_ENVELOPE_LINE, READ_WHOLE, Spool, accepted_event
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


@pytest.mark.parametrize("recipients", [1, 3_000], ids=["short-envelope", "long-envelope"])
@pytest.mark.parametrize("size", [0, READ_WHOLE, READ_WHOLE + 1, 3 * READ_WHOLE])
def test_a_spooled_message_reads_back_whole_and_with_its_time(tmp_path, recipients, size):
    """Whatever the envelope line's length (3,000 recipients: past the first read) and the
    message's size on either side of READ_WHOLE: the same envelope and bytes, and the time
    the accepted event carries is the file's modification time."""
    spool = Spool(tmp_path)
    envelope = Envelope(
        message_id="01READ",
        mail_from="",
        recipients=[f"r{n}@x.example" for n in range(recipients)],
    )
    raw = (b"Subject: sized\r\n\r\n" + b"b" * size)[: max(size, 1)]
    path = spool.write(envelope, raw)
    read, message, modified = spool.read_spooled(path)
    assert read == envelope
    assert message.read() == raw
    assert modified == path.stat().st_mtime
    assert accepted_event(path, envelope, message.size, modified) == accepted_event(
        path, envelope, message.size
    )


@pytest.mark.parametrize(
    "content", [b"", b'{"message_id": "01TORN"', b"x" * (MAX_ENVELOPE_LINE + 10)]
)
def test_a_spool_file_without_its_envelope_line_is_refused(tmp_path, content):
    """Empty, torn before the line's end, or a line past MAX_ENVELOPE_LINE: unreadable
    (the worker quarantines it), not a message."""
    path = tmp_path / "01TORN.msg"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="no envelope line"):
        Spool.read(path)


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


def test_the_worker_s_read_leaves_the_spool_file_s_access_time(tmp_path):
    """Read with O_NOATIME (its inode, fsynced for the 250, is not dirtied again by the read):
    an access time older than the change, which `relatime` would update, stays."""
    spool = Spool(tmp_path)
    envelope = Envelope(message_id="01ATIME", mail_from="", recipients=["a@x.example"])
    path = spool.write(envelope, b"Subject: atime\r\n\r\n")
    modified = path.stat().st_mtime_ns
    os.utime(path, ns=(modified - 10**11, modified))
    spool.read_spooled(path)
    assert path.stat().st_atime_ns == modified - 10**11
