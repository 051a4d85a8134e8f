"""Raw header edits leave every other byte alone: the relayed message is the original plus
prepended fields, minus forged Authentication-Results claiming to be ours."""

from __future__ import annotations

import pytest

from mxgate.message.headers import header_fields, prepend_headers, remove_authentication_results

ORIGINAL = (
    b"Received: from a by b; Tue, 1 Jul 2025 10:00:00 +0000\r\n"
    b"Authentication-Results: mxgate.local; spf=pass smtp.mailfrom=forged@example.com\r\n"
    b"Authentication-Results: (a comment) MXGATE.LOCAL 1;\r\n\tdkim=pass header.d=forged.example\r\n"
    b"authentication-results: mx.google.com; dkim=pass header.d=example.com\r\n"
    b"Authentication-Results: mxgate.local.evil.example; none\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"Authentication-Results: mxgate.local; in the body, untouched\r\n"
)


def test_forged_results_go_and_nothing_else_changes():
    cleaned = remove_authentication_results(ORIGINAL, "mxgate.local")
    assert cleaned == (
        b"Received: from a by b; Tue, 1 Jul 2025 10:00:00 +0000\r\n"
        b"authentication-results: mx.google.com; dkim=pass header.d=example.com\r\n"
        b"Authentication-Results: mxgate.local.evil.example; none\r\n"
        b"Subject: hello\r\n"
        b"\r\n"
        b"Authentication-Results: mxgate.local; in the body, untouched\r\n"
    )


def test_a_message_without_ours_is_returned_as_it_is():
    raw = b"Subject: x\nAuthentication-Results: other.example; none\n\nbody\n"
    assert remove_authentication_results(raw, "mxgate.local") is raw


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_header_fields_cover_folded_lines(ending):
    raw = ORIGINAL.replace(b"\r\n", ending)
    fields = header_fields(raw)
    assert [name for name, _, _ in fields][:3] == [
        b"Received",
        b"Authentication-Results",
        b"Authentication-Results",
    ]
    _, start, end = fields[2]
    assert raw[start:end].endswith(b"header.d=forged.example" + ending)
    assert b"".join(raw[s:e] for _, s, e in fields) + ending + raw.split(ending * 2, 1)[1] == raw


def test_prepended_fields_follow_the_message_line_ending():
    raw = b"Subject: x\n\nbody\n"
    out = prepend_headers(raw, [("Authentication-Results", "mxgate.local;\r\n\tspf=pass")])
    assert out == b"Authentication-Results: mxgate.local;\n\tspf=pass\n" + raw
