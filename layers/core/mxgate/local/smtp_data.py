"""The message as DATA carries it: pieces of text in, the message's bytes written to a sink
as they come (the spool file at the ingress), so no message is ever whole in memory.

RFC 5321 section 4.5.2: a line of a single dot ends the message; a dot that starts a line
with more on it was added by the sender (dot-stuffing) and is taken off. The rules here, and
why (docs/defences.md, "Bytes"):

- Only `<CRLF>.<CRLF>` ends the data. A dot followed by a bare LF (`.\\n`) is not an end, so it
  is not a stuffed dot either: it stays, and `\\r\\n.\\n` arrives as sent.
- Lines longer than RFC 5321's 1,000 octets are kept, byte for byte, as Postfix keeps them
  (machine-written HTML has them); only the message size limit bounds them.
- A NUL, or a CR that is not part of a CRLF, refuses the whole message: both are forbidden in
  7bit and 8bit content (RFC 5322 2.3, RFC 6152), and mail parsers disagree about what they
  mean, which is what SMTP smuggling and header injection live on. Refusing changes no byte
  and loses nothing: the sender keeps the message and says why it came back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

END = b".\r\n"
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"


def content_problem(piece: bytes, complete: bool) -> str | None:
    """What forbids this piece of a line (None: nothing). A complete piece ends in its CRLF."""
    body = piece[:-2] if complete else piece
    if b"\x00" in body:
        return "a NUL byte"
    if b"\r" in body:
        return "a bare CR (a CR not followed by LF)"
    return None


class DataSink(Protocol):
    """Where the message's bytes go as they arrive (a file, buffered)."""

    def write(self, data: bytes, /) -> object: ...

    def discard(self) -> None:
        """Keep nothing: the message was refused, or the client left."""


@dataclass
class DataAssembler:
    """Takes the pieces one DATA sends: whole lines, or the parts of a line longer than the
    reader takes at once, and writes the message's bytes to `sink`. `add` says when the
    end-of-data line has come. Once the message is refused (too big, a NUL, a bare CR), nothing
    more is written: the caller throws away what the sink holds."""

    size_limit: int | None
    sink: DataSink
    size: int = 0
    line: int = 1  # the line the next piece belongs to
    problem: str | None = None  # the first reason to refuse the message, if any
    too_big: bool = False
    _line_start: bool = True

    def add(self, piece: bytes, complete: bool) -> bool:
        """One piece as read; `complete` when it ends with CRLF. True at the end of data."""
        starts_line, self._line_start = self._line_start, complete
        if starts_line and piece == END:
            return True
        if starts_line and piece.startswith(b".") and not piece.startswith(b".\n"):
            piece = piece[1:]  # the sender's transparency dot (a `.` + bare LF is not one)
        if self.problem is None and not self.too_big:
            problem = content_problem(piece, complete)
            if problem is not None:
                self.problem = f"{problem} on line {self.line}"
        self.size += len(piece)
        if self.size_limit is not None and self.size > self.size_limit:
            self.too_big = True
        if self.problem is None and not self.too_big:
            self.sink.write(piece)  # refused: read on to the end, writing nothing
        if complete:
            self.line += 1
        return False

    @property
    def refusal(self) -> str | None:
        """The reply that refuses the message, or None when it may be accepted."""
        if self.too_big:
            return TOO_BIG
        if self.problem is not None:
            return f"550 5.6.0 Message refused: {self.problem}"
        return None
