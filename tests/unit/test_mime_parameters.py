"""MIME parameters read as a hostile message writes them, and what the quarantine rules make
of every name a part gives itself."""

from __future__ import annotations

import base64

import pytest

from mxgate.message.parameters import parse_parameters, value, values
from mxgate.message.parse import parse_message
from mxgate.routing.quarantine import facts_of, quarantine_rule
from mxgate.routing.routes import load_routes
from tests.support import REPO

RULES = load_routes(REPO / "config" / "routes.yaml").quarantine  # the shipped rules
PE = base64.b64encode(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00")
PDF = base64.b64encode(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n")


@pytest.mark.parametrize(
    ("field", "every", "one"),
    [
        ('attachment; filename="a.pdf"', ["a.pdf"], "a.pdf"),
        ('attachment; filename="a.txt"; filename="b.exe"', ["a.txt", "b.exe"], "a.txt"),
        ('attachment; filename*0="x.ex"; filename*1="e"', ["x.exe", "x.ex", "e"], "x.exe"),
        ("attachment; filename*=utf-8''%E2%82%AC.txt", ["€.txt"], "€.txt"),
        (
            "attachment; filename*0*=utf-8''%E2%82%AC; filename*1=.exe",
            ["€.exe", "€", ".exe"],
            "€.exe",
        ),
        # the standard library's compat32 reader raises on this mix
        (
            'attachment; filename*0="c.ex"; filename*1="e"; filename*=utf-8\'\'d%2Etxt',
            ["d.txt", "c.exe", "c.ex", "e"],
            "c.exe",
        ),
        ('attachment; filename="semi;colon.exe"; size=3', ["semi;colon.exe"], "semi;colon.exe"),
        ('attachment; filename="back\\"slash.txt"', ['back"slash.txt'], 'back"slash.txt'),
        ("attachment; filename=", [], None),
        ("attachment", [], None),
    ],
)
def test_every_value_of_a_parameter_and_the_one_clients_read(field, every, one):
    parameters = parse_parameters(field)
    assert values(parameters, "filename") == every
    assert value(parameters, "filename") == one


def message(content_type: bytes, disposition: bytes, content: bytes) -> bytes:
    return (
        b"From: a@shop.example\r\nTo: alice@nutrition.co\r\nSubject: files\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--XX\r\nContent-Type: " + content_type + b"\r\nContent-Disposition: " + disposition
        + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + content + b"\r\n--XX--\r\n"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("content_type", "disposition", "content", "rule"),
    [
        # a PE executable named report.pdf and declared as one: its sniffed type decides
        (b"application/pdf", b"attachment; filename=report.pdf", PE, "executable-type"),
        (b"text/plain; name=x.exe", b"attachment; filename=x.txt", PDF, "executable-attachment"),
        (b"text/plain", b"attachment; filename=a.txt; filename=b.exe", PDF, "executable-attachment"),
        (b"text/plain", b'attachment; filename="x.exe::$DATA"', PDF, "executable-attachment"),
        (b"text/plain", b'attachment; filename="x.exe:Zone.Identifier"', PDF, "executable-attachment"),
        (b"text/plain", b'attachment; filename="C:\\\\Temp\\\\x.scr"', PDF, "executable-attachment"),
        (b"text/plain", b"attachment; filename*0=report.pdf; filename*1=.js", PDF, "executable-attachment"),
        (b"text/plain", b"attachment; filename*0=\"c.ex\"; filename*1=\"e\"; filename*=utf-8''d.txt", PDF,
         "executable-attachment"),
    ],
)  # fmt: skip
def test_what_a_file_really_is_is_quarantined(content_type, disposition, content, rule):
    parsed = parse_message(message(content_type, disposition, content))
    assert parsed.unreadable is None
    decided = quarantine_rule(RULES, "workspace", facts_of(parsed))
    assert decided is not None
    assert decided[0].name == rule


def test_a_pdf_that_is_a_pdf_passes():
    parsed = parse_message(message(b"application/pdf", b"attachment; filename=report.pdf", PDF))
    (attachment,) = parsed.attachments
    assert (attachment.names, attachment.sniffed_type) == (["report.pdf"], "application/pdf")
    assert quarantine_rule(RULES, "workspace", facts_of(parsed)) is None


@pytest.mark.parametrize(
    ("content_type", "disposition", "content", "reason"),
    [
        (b"application/pdf", b"attachment; filename=report.pdf", PE,
         ("attachment report.pdf (sniffed application/vnd.microsoft.portable-executable, "
          "declared application/pdf)")),
        (b"text/plain; name=x.exe", b"attachment; filename=x.txt", PDF,
         "attachment x.txt (named x.exe, text/plain)"),
    ],
)  # fmt: skip
def test_the_reason_names_what_matched(content_type, disposition, content, reason):
    parsed = parse_message(message(content_type, disposition, content))
    decided = quarantine_rule(RULES, "workspace", facts_of(parsed))
    assert decided is not None
    assert decided[1] == reason
