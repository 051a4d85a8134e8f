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

_MARK = b"\r\n."  # a line that starts with a dot: the end of data, or a stuffed dot
_CRLF = b"\r\n"
_LF = 10
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"


def content_problem(text: bytes) -> tuple[str, int] | None:
    """What forbids this text (None: nothing), and where: a NUL, or a CR not followed by LF.
    `text` never ends in a CR whose LF is still to come (DataAssembler holds it back)."""
    nul = text.find(b"\x00")
    bare = -1
    if text.count(b"\r") != text.count(b"\r\n"):  # there is one: find the first
        bare = text.find(b"\r")
        while text.startswith(b"\r\n", bare):
            bare = text.find(b"\r", bare + 2)
    if nul < 0 and bare < 0:
        return None
    if bare < 0 or 0 <= nul < bare:
        return "a NUL byte", nul
    return "a bare CR (a CR not followed by LF)", bare


class DataSink(Protocol):
    """Where the message's bytes go as they arrive (a file, buffered)."""

    def write(self, data: bytes, /) -> object: ...

    def discard(self) -> None:
        """Keep nothing: the message was refused, or the client left."""


@dataclass
class DataAssembler:
    """Takes DATA as the connection brings it, in chunks cut anywhere (a dot, a CRLF or the
    end line itself may be split between two), and writes the message's bytes to `sink`.
    `feed` says where the end-of-data line ended. Once the message is refused (too big, a NUL,
    a bare CR), nothing more is written: the caller throws away what the sink holds.

    The data is scanned a chunk at a time for CRLF + dot (bytes.find), not a line at a time:
    a 5 KB message is one or two chunks instead of seventy lines, a 40 MB one a few hundred."""

    size_limit: int | None
    sink: DataSink
    size: int = 0
    line: int = 1  # the line the next byte written belongs to
    problem: str | None = None  # the first reason to refuse the message, if any
    too_big: bool = False
    # bytes seen but not yet taken: what may begin a CRLF + dot line. It starts as a CRLF
    # nobody sent (`_virtual` of its bytes), since DATA starts at the start of a line.
    _held: bytes = b"\r\n"
    _virtual: int = 2

    def feed(self, chunk: bytes) -> int | None:
        """The next bytes of DATA. None: the end has not come yet; otherwise the number of
        bytes of `chunk` up to and including the end-of-data line (the rest is not DATA)."""
        held = len(self._held)
        text = self._held + chunk if held else chunk
        start = self._virtual  # the first byte not yet taken
        self._virtual = 0
        at = 0
        while (mark := text.find(_MARK, at)) >= 0:
            after = mark + 3
            if after + 2 > len(text):  # not yet known what follows the dot: hold it
                self._take(text, start, mark)
                self._held, self._virtual = text[mark:], max(0, start - mark)
                return None
            if text.startswith(_CRLF, after):  # <CRLF>.<CRLF>: the end
                self._take(text, start, mark + 2)
                self._held = b""
                return after + 2 - held
            if text[after] != _LF:  # the sender's transparency dot (a `.` + bare LF is not one)
                self._take(text, start, mark + 2)
                start = after
            at = after
        keep = 2 if text.endswith(b"\r\n") else 1 if text.endswith(b"\r") else 0
        keep = max(0, min(keep, len(text) - max(start, at)))  # never what was looked at
        self._take(text, start, len(text) - keep)
        self._held = text[len(text) - keep :]
        return None

    def _take(self, text: bytes, start: int, end: int) -> None:
        """text[start:end] is the message's: checked, counted and written."""
        if end <= start:
            return
        piece = text[start:end]
        if self.problem is None and not self.too_big:
            found = content_problem(piece)
            if found is not None:
                problem, where = found
                line = self.line + piece.count(_CRLF, 0, where)
                self.problem = f"{problem} on line {line}"
        self.size += len(piece)
        if self.size_limit is not None and self.size > self.size_limit:
            self.too_big = True
        if self.problem is None and not self.too_big:
            self.sink.write(piece)  # refused: read on to the end, writing nothing
            self.line += piece.count(_CRLF)

    @property
    def refusal(self) -> str | None:
        """The reply that refuses the message, or None when it may be accepted."""
        if self.too_big:
            return TOO_BIG
        if self.problem is not None:
            return f"550 5.6.0 Message refused: {self.problem}"
        return None
