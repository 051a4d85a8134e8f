"""DATA as the ingress reads it: pieces of lines in, the message's exact bytes out to a sink."""

from __future__ import annotations

import io

import pytest

from mxgate.local.smtp_data import DataAssembler


class Sink(io.BytesIO):
    def discard(self) -> None:
        self.truncate(0)


class Assembled(DataAssembler):
    @property
    def content(self) -> bytes:
        assert isinstance(self.sink, Sink)
        return self.sink.getvalue()


def assemble(*pieces: bytes, limit: int | None = None) -> Assembled:
    """Feed pieces as the stream reader gives them: whole CRLF lines, or parts of long ones."""
    data = Assembled(limit, Sink())
    for piece in pieces:
        if data.add(piece, piece.endswith(b"\r\n")):
            return data
    raise AssertionError("no end of data")


def test_a_lone_dot_ends_the_data_and_stuffed_dots_come_off():
    data = assemble(b"Subject: x\r\n", b"\r\n", b"..hidden\r\n", b"...two\r\n", b".\r\n")
    assert data.refusal is None
    assert data.content == b"Subject: x\r\n\r\n.hidden\r\n..two\r\n"


def test_a_dot_before_a_bare_lf_is_data_not_transparency():
    # `\r\n.\n` is no end of data, so its dot was never a stuffed one: it stays
    data = assemble(b"Subject: x\r\n", b"\r\n", b"before\r\n", b".\nafter\r\n", b".\r\n")
    assert data.content == b"Subject: x\r\n\r\nbefore\r\n.\nafter\r\n"


def test_a_dot_inside_a_line_or_after_a_bare_lf_is_kept():
    data = assemble(b"a.b\r\n", b"x\n.y\r\n", b".\r\n")
    assert data.content == b"a.b\r\nx\n.y\r\n"


def test_a_line_longer_than_1000_octets_is_kept_byte_for_byte():
    long_line = b"<td>" + b"x" * 5000 + b"</td>"
    # the reader hands a long line over in pieces; only the first may carry a stuffed dot
    data = assemble(
        b"Subject: html\r\n", b"\r\n", b"." + long_line[:2000], long_line[2000:] + b"\r\n", b".\r\n"
    )
    assert data.refusal is None
    assert data.content == b"Subject: html\r\n\r\n" + long_line + b"\r\n"
    assert data.line == 4


@pytest.mark.parametrize(
    ("pieces", "reason"),
    [
        ((b"Subject: a\x00b\r\n",), "a NUL byte on line 1"),
        ((b"Subject: ok\r\n", b"\r\n", b"body\x00\r\n"), "a NUL byte on line 3"),
        ((b"Subject: a\rX-Injected: yes\r\n",), "a bare CR (a CR not followed by LF) on line 1"),
        ((b"Subject: ok\r\n", b"\r\n", b"one\r.\r\n"), "a bare CR"),  # smuggling's `\r.\r\n`
        ((b"Subject: ok\r\n", b"x" * 3000 + b"\r", b"\r\n"), "a bare CR"),  # at a piece's end
    ],
)
def test_nul_and_bare_cr_refuse_the_whole_message(pieces, reason):
    data = assemble(*pieces, b"more\r\n", b".\r\n")
    assert data.refusal is not None
    assert data.refusal.startswith("550 5.6.0 Message refused: ")
    assert reason in data.refusal
    assert data.content == b"Subject: ok\r\n\r\n"[: len(data.content)]  # nothing written after


def test_a_crlf_split_across_pieces_is_no_bare_cr():
    data = assemble(b"Subject: ok\r\n", b"\r\n", b"y" * 3000, b"\r\n", b".\r\n")
    assert data.refusal is None
    assert data.content.endswith(b"y" * 3000 + b"\r\n")


def test_over_the_size_limit_is_552_after_the_end():
    data = assemble(b"Subject: big\r\n", b"\r\n", b"z" * 100 + b"\r\n", b".\r\n", limit=50)
    assert data.refusal == "552 5.3.4 Message size exceeds fixed maximum message size"
    assert data.content == b"Subject: big\r\n\r\n"  # nothing past the limit is written
