"""A message read from its file in chunks: the header section in memory, the body streamed;
DATA written from those chunks exactly as from the whole message."""

from __future__ import annotations

import io
import random

import pytest

from mxgate.delivery.smtp import data_pieces, to_crlf
from mxgate.message.headers import prepend_headers
from mxgate.message.raw import RawMessage

MESSAGE = b"Subject: hi\r\nFrom: a@example.org\r\n\r\n.dot first\r\nbody\r\n..two\r\nend\r\n"


def whole_data(message: bytes) -> bytes:
    """DATA for a message at hand: CRLF lines, leading dots doubled, then the final dot."""
    crlf = to_crlf(message)
    stuffed = crlf.replace(b"\n.", b"\n..")
    stuffed = b"." + stuffed if stuffed.startswith(b".") else stuffed
    return stuffed + (b".\r\n" if stuffed.endswith(b"\r\n") else b"\r\n.\r\n")


def cut(data: bytes, seed: int) -> list[bytes]:
    """The bytes in chunks of random sizes (1 to 7 bytes): every boundary falls somewhere."""
    rng = random.Random(seed)
    chunks, position = [], 0
    while position < len(data):
        size = rng.randint(1, 7)
        chunks.append(data[position : position + size])
        position += size
    return chunks


@pytest.mark.parametrize(
    "message",
    [
        MESSAGE,
        b".starts with a dot\r\n\r\n.\r\n..\r\n",
        b"Subject: lf\n\nbare\nlf\n.dot after a bare lf\n",
        b"Subject: cr\r\n\r\nends with a cr\r",
        b"Subject: no end\r\n\r\nno line break at the end",
        b"",
    ],
)
@pytest.mark.parametrize("seed", range(20))
def test_data_from_chunks_equals_data_from_the_whole_message(message, seed):
    assert b"".join(data_pieces(cut(message, seed))) == whole_data(message)


def test_a_line_longer_than_the_hold_back_goes_in_parts(monkeypatch):
    monkeypatch.setattr("mxgate.delivery.smtp.LONG_LINE", 16)
    message = b"Subject: long\r\n\r\n." + b"x" * 100 + b"\r\n.next\r\n"
    assert b"".join(data_pieces(cut(message, 1))) == whole_data(message)


def test_a_message_in_a_file_reads_as_its_bytes(tmp_path):
    path = tmp_path / "spooled"
    path.write_bytes(b'{"envelope": 1}\n' + MESSAGE)
    message = RawMessage.in_file(path, offset=16)
    assert message.header == b"Subject: hi\r\nFrom: a@example.org\r\n\r\n"
    assert message.size == len(MESSAGE)
    assert b"".join(message.chunks(size=5)) == MESSAGE
    assert message.read() == MESSAGE
    with message.open() as stream:
        assert stream.read() == MESSAGE


def test_header_edits_leave_the_body_as_it_is(tmp_path):
    path = tmp_path / "message"
    path.write_bytes(MESSAGE)
    message = RawMessage.in_file(path)
    edited = message.with_header(prepend_headers(message.header, [("X-Trace", "yes")]))
    assert edited.read() == b"X-Trace: yes\r\n" + MESSAGE
    assert edited.size == len(MESSAGE) + len(b"X-Trace: yes\r\n")
    assert message.read() == MESSAGE  # the original is unchanged


def test_the_whole_stream_seeks_across_the_header_and_the_body():
    message = RawMessage.of(MESSAGE)
    with message.open() as stream:
        assert stream.seek(0, io.SEEK_END) == len(MESSAGE)
        stream.seek(30)
        assert stream.read(20) == MESSAGE[30:50]
        stream.seek(3)
        assert stream.read() == MESSAGE[3:]


def test_a_message_without_a_body_is_all_header():
    message = RawMessage.of(b"Subject: only a header\r\n")
    assert (message.header, message.body_size) == (b"Subject: only a header\r\n", 0)
    assert message.read() == b"Subject: only a header\r\n"


def test_a_message_in_memory_opens_as_its_bytes_and_an_edited_one_with_its_edits():
    """In memory with its header as it came, a stream of it is its bytes (no layered reads);
    a header of the same length but other bytes is not mistaken for it."""
    message = RawMessage.of(MESSAGE)
    with message.open() as stream:
        assert stream.read() == MESSAGE
    edited = message.with_header(prepend_headers(message.header, [("X-Trace", "yes")]))
    with edited.open() as stream:
        assert stream.read() == b"X-Trace: yes\r\n" + MESSAGE
    same_length = message.with_header(message.header.replace(b"hi", b"ho"))
    with same_length.open() as stream:
        assert stream.read() == MESSAGE.replace(b"Subject: hi", b"Subject: ho")


def test_an_edited_message_no_longer_names_its_file(tmp_path):
    """The file a spool file's message names is what the object store may link instead of
    writing the bytes: a header edit (AddHeader) makes other bytes, so no file."""
    path = tmp_path / "01FILE.msg"
    path.write_bytes(MESSAGE)
    for message in (
        RawMessage.of(MESSAGE, file=str(path)),
        RawMessage.in_file(path, file=str(path)),
    ):
        assert message.file == str(path)
        assert message.with_header(message.header).file == str(path)  # unchanged: itself
        edited = message.with_header(prepend_headers(message.header, [("X-Added", "1")]))
        assert edited.file is None
        assert edited.read() == b"X-Added: 1\r\n" + MESSAGE
