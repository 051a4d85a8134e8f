"""DATA as the ingress reads it: chunks cut anywhere in, the message's exact bytes out to a sink."""

from __future__ import annotations

import io
import random

import pytest

from mxgate.local.smtp_data import DataAssembler


class Sink(io.BytesIO):
    def discard(self) -> None:
        self.truncate(0)


class Assembled(DataAssembler):
    consumed: int = 0  # bytes of the stream up to the end of data

    @property
    def content(self) -> bytes:
        assert isinstance(self.sink, Sink)
        return self.sink.getvalue()


def assemble(*pieces: bytes, limit: int | None = None) -> Assembled:
    """Feed the chunks as the connection brings them; note where the end of data was."""
    data = Assembled(limit, Sink())
    seen = 0
    for piece in pieces:
        end = data.feed(piece)
        if end is not None:
            data.consumed = seen + end
            return data
        seen += len(piece)
    raise AssertionError("no end of data")


def reference(stream: bytes) -> tuple[bytes, str | None, int]:
    """RFC 5321 4.5.2 as docs/defences.md says it, a CRLF line at a time: (the message, the
    first problem (the first NUL or bare CR) with its line, the bytes up to the end of data)."""
    lines, problem, at, number = [], None, 0, 1
    while True:
        end = stream.index(b"\r\n", at) + 2
        line, at = stream[at:end], end
        if line == b".\r\n":
            return b"".join(lines), problem, at
        if line.startswith(b".") and not line.startswith(b".\n"):
            line = line[1:]
        body = line[:-2]
        nul, bare = body.find(b"\x00"), body.find(b"\r")
        if problem is None and nul >= 0 and (bare < 0 or nul < bare):
            problem = f"a NUL byte on line {number}"
        elif problem is None and bare >= 0:
            problem = f"a bare CR (a CR not followed by LF) on line {number}"
        lines.append(line)
        number += 1


def cut(stream: bytes, rng: random.Random) -> list[bytes]:
    """The stream in chunks of random sizes, from one byte up."""
    chunks, at = [], 0
    while at < len(stream):
        size = rng.choice((1, 1, 2, 3, 4, 5, rng.randint(1, 64)))
        chunks.append(stream[at : at + size])
        at += size
    return chunks


@pytest.mark.parametrize("seed", range(40))
def test_any_chunk_boundaries_give_the_bytes_a_line_reader_gives(seed):
    """Dots, CRs, LFs and the end line fall on chunk edges every way they can."""
    rng = random.Random(seed)
    for _ in range(50):
        body = bytes(rng.choice(b"..\r\n\r\nab\x00") for _ in range(rng.randint(0, 40)))
        if rng.random() < 0.7:  # mostly well-formed: the common dot cases without a refusal
            body = body.replace(b"\x00", b"z").replace(b"\r", b"").replace(b"\n", b"\r\n")
        stream = body + b"\r\n.\r\nQUIT\r\n"
        message, problem, end = reference(stream)
        data = assemble(*cut(stream, rng))
        assert data.consumed == end, stream
        if problem is None:
            assert data.refusal is None, stream
            assert data.content == message, stream
        else:
            assert data.refusal == f"550 5.6.0 Message refused: {problem}", stream


def test_the_end_line_split_over_chunks_stops_at_its_last_byte():
    stream = b"Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@b.example>\r\n"
    for edge in range(1, len(stream)):
        data = assemble(stream[:edge], stream[edge:])
        assert data.content == b"Subject: x\r\n\r\nbody\r\n"
        assert stream[data.consumed :] == b"MAIL FROM:<a@b.example>\r\n"


def test_an_empty_message_is_the_end_line_alone():
    data = assemble(b".\r\nQUIT\r\n")
    assert (data.content, data.consumed, data.refusal) == (b"", 3, None)
    data = assemble(b".", b"\r", b"\nQUIT\r\n")
    assert (data.content, data.consumed) == (b"", 3)


def test_a_lone_dot_ends_the_data_and_stuffed_dots_come_off():
    data = assemble(b"Subject: x\r\n\r\n..hidden\r\n...two\r\n.\r\n")
    assert data.refusal is None
    assert data.content == b"Subject: x\r\n\r\n.hidden\r\n..two\r\n"


def test_a_stuffed_dot_on_the_first_line_comes_off():
    assert assemble(b"..first\r\n.\r\n").content == b".first\r\n"
    assert assemble(b".", b".first\r\n.\r\n").content == b".first\r\n"


def test_a_dot_before_a_bare_lf_is_data_not_transparency():
    # `\r\n.\n` is no end of data, so its dot was never a stuffed one: it stays
    data = assemble(b"Subject: x\r\n\r\nbefore\r\n.\nafter\r\n.\r\n")
    assert data.content == b"Subject: x\r\n\r\nbefore\r\n.\nafter\r\n"


def test_a_dot_inside_a_line_or_after_a_bare_lf_is_kept():
    data = assemble(b"a.b\r\nx\n.y\r\nend.\r\n.\r\n")
    assert data.content == b"a.b\r\nx\n.y\r\nend.\r\n"


def test_a_line_longer_than_1000_octets_is_kept_byte_for_byte():
    long_line = b"<td>" + b"x" * 5000 + b"</td>"
    data = assemble(
        b"Subject: html\r\n\r\n." + long_line[:2000], long_line[2000:] + b"\r\n", b".\r\n"
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
        ((b"Subject: ok\r\n", b"x" * 3000 + b"\r", b"\r\n"), "a bare CR"),  # at a chunk's end
        ((b"Subject: ok\r\n\r\nx\r", b"\r\n"), "a bare CR (a CR not followed by LF) on line 3"),
    ],
)
def test_nul_and_bare_cr_refuse_the_whole_message(pieces, reason):
    data = assemble(*pieces, b"more\r\n", b".\r\n")
    assert data.refusal is not None
    assert data.refusal.startswith("550 5.6.0 Message refused: ")
    assert reason in data.refusal
    sent = b"".join(pieces)  # what came before the problem, at most: nothing after it
    assert sent.startswith(data.content)
    assert b"\x00" not in data.content
    assert b"\r" not in data.content.replace(b"\r\n", b"")


def test_a_crlf_split_across_chunks_is_no_bare_cr():
    data = assemble(b"Subject: ok\r\n", b"\r\n", b"y" * 3000 + b"\r", b"\n", b".\r\n")
    assert data.refusal is None
    assert data.content.endswith(b"y" * 3000 + b"\r\n")


def test_over_the_size_limit_is_552_after_the_end():
    data = assemble(b"Subject: big\r\n", b"\r\n", b"z" * 100 + b"\r\n", b".\r\n", limit=50)
    assert data.refusal == "552 5.3.4 Message size exceeds fixed maximum message size"
    assert b"Subject: big\r\n\r\n".startswith(data.content)  # nothing past the limit is written
