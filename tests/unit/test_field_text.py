"""A header field's text both ways: unfolding a received value, and formatting a field we
write. Values with no line break take a short way in each; these pin that it gives what the
full way gives."""

from __future__ import annotations

import pytest

from mxgate.message.headers import format_field
from mxgate.message.text import unfold


@pytest.mark.parametrize(
    ("value", "unfolded"),
    [
        ("plain value", "plain value"),
        (" leading and trailing ", " leading and trailing "),
        ("folded\r\n continues", "folded continues"),
        ("folded\n\tby a tab", "folded\tby a tab"),
        ("stray\rcarriage return", "straycarriage return"),
        ("stray\nline feed", "strayline feed"),
        ("ends with a break\r\n", "ends with a break"),
    ],
)
def test_unfold_takes_out_every_line_break(value: str, unfolded: str) -> None:
    assert unfold(value) == unfolded


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("mx.example; spf=pass", b"X-Test: mx.example; spf=pass\r\n"),
        ("kept\r\n folding", b"X-Test: kept\r\n folding\r\n"),
        ("bare\rCR", b"X-Test: bare CR\r\n"),
        ("bare\nLF", b"X-Test: bare LF\r\n"),
        ("a line\r\nX-Injected: yes", b"X-Test: a line X-Injected: yes\r\n"),
        ("nul\x00byte", b"X-Test: nul byte\r\n"),
    ],
)
def test_a_field_we_write_never_holds_a_line_break_that_is_not_folding(
    value: str, field: bytes
) -> None:
    assert format_field("X-Test", value) == field
