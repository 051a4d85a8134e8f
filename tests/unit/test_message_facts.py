"""The rule set's header facts read without the standard library's parser are the ones it
gives: for plain fields (the usual message) and for every corpus message; anything else is
left to it."""

from __future__ import annotations

import pytest

from mxgate.local.facts import _fields, _header_facts, library_header_facts
from mxgate.message.raw import RawMessage
from tests.mailtools import CORPUS

EDGES = [
    b"Subject: hello  world\r\n\tagain\r\nFrom: A <a@x.example>, b@y.example\r\n\r\nbody",
    b"Subject:    lead\r\nSubject: second\r\n\r\n",
    b"Subject: trail   \r\nTo: a@b.example,\r\n c@d.example\r\n\r\n",
    b"Subject: a\r\n \r\n b\r\nDisposition-Notification-To: <a@b.example>\r\n\r\n",
    b"subject:x\ty\nto: a@b.example,\n c@d.example\ncc: \n\nbody",
    b'Subject: caf\xc3\xa9\r\nTo: "Q, R" <q@r.example>, s@t.example\r\n\r\nbody',
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\nFrom: =?utf-8?q?J=C3=BCrgen?= <j@m.example>\r\n\r\n",
    b"From: (comment) a@b.example\r\nSender: Group: c@d.example;\r\n\r\n",
    b"To : x@y.example\r\nSubject: s\r\n\r\n",  # a blank before the colon
    b"From x@y Mon Dec  1 12:00:00 2026\r\nSubject: s\r\n\r\n",  # an mbox line
    b" folded\r\nSubject: s\r\n\r\n",  # a folded first line
    b"Subject: a\rb\r\nTo: t@x.example\r\n\r\n",  # a bare CR
    b"Subject: x\r\n\r\n",
    b"\r\nbody",
    b"no header at all",
]


def _header(raw: bytes) -> bytes:
    return RawMessage.of(raw).header


@pytest.mark.parametrize("raw", EDGES)
def test_edge_cases_read_as_the_standard_library_reads_them(raw: bytes) -> None:
    assert _header_facts(_header(raw)) == library_header_facts(_header(raw))


def test_the_corpus_reads_as_the_standard_library_reads_it() -> None:
    messages = [p for p in sorted(CORPUS.rglob("*")) if p.is_file() and p.suffix != ".md"]
    assert len(messages) > 50
    plain = 0
    for path in messages:
        header = _header(path.read_bytes())
        plain += _fields(header) is not None
        assert _header_facts(header) == library_header_facts(header), path
    assert plain > len(messages) // 2  # most take the plain reading


def test_plain_fields_take_the_plain_reading_and_odd_ones_the_library() -> None:
    assert _fields(_header(EDGES[0])) is not None
    assert _fields(_header(EDGES[4])) is not None  # LF line endings
    for odd in EDGES[8:12]:
        assert _fields(_header(odd)) is None
