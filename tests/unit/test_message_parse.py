"""The parser on messages built here, one behaviour each: what real mail throws at a gateway."""

from __future__ import annotations

import base64
import hashlib

import pytest

from mxgate.message.attachments import safe_filename, sniff
from mxgate.message.model import ParseLimits
from mxgate.message.parse import parse_message, parse_stream
from tests.mailtools import Store, Trickle


def mime(*parts: bytes, boundary: str = "b0undary", headers: bytes = b"") -> bytes:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return (
        b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: parts\r\n"
        + headers
        + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="'
        + boundary.encode()
        + b'"\r\n\r\npreamble\r\n'
        + body
        + b"--"
        + boundary.encode()
        + b"--\r\nepilogue\r\n"
    )


def test_plain_message_fields():
    raw = (
        b"From: =?utf-8?q?Ren=C3=A9e?= <renee@example.com>\r\n"
        b"Sender: list@example.com\r\nReply-To: Help <help@example.com>\r\n"
        b'To: a@example.org, "B, Bee" <b@example.org>\r\nCc: undisclosed-recipients:;\r\n'
        b"Subject: =?iso-8859-1?b?SGVsbG8g8A==?= world\r\n"
        b"Date: Tue, 1 Jul 2025 10:00:00 +0200\r\nMessage-ID: <abc@example.com>\r\n"
        b"In-Reply-To: <parent@example.com>\r\nReferences: <root@example.com> <parent@example.com>\r\n"
        b"\r\nHello\r\n"
    )
    message = parse_message(raw)
    assert message.from_[0].name == "Renée"
    assert message.from_[0].address == "renee@example.com"
    assert message.sender[0].address == "list@example.com"
    assert message.reply_to[0].name == "Help"
    assert [(a.name, a.address) for a in message.to] == [
        ("", "a@example.org"),
        ("B, Bee", "b@example.org"),
    ]
    assert message.cc == []
    assert message.subject == "Hello ð world"
    assert message.message_id == "abc@example.com"
    assert message.in_reply_to == "parent@example.com"
    assert message.references == ["root@example.com", "parent@example.com"]
    assert message.sent_at is not None
    assert message.sent_at.utcoffset() is not None
    assert message.text == "Hello\n"
    assert message.html is None
    assert message.size == len(raw)
    assert message.sha256 == hashlib.sha256(raw).hexdigest()
    assert message.unreadable is None
    dumped = message.model_dump(mode="json", by_alias=True)
    assert dumped["from"][0]["address"] == "renee@example.com"


def test_headers_keep_raw_and_decoded_values():
    raw = b"Subject: =?utf-8?b?w6k=?=\r\n =?utf-8?b?w6k=?= x\r\nX-Odd: caf\xe9\r\n\r\nbody"
    message = parse_message(raw)
    subject = message.headers[0]
    assert subject.name == "Subject"
    assert subject.raw == " =?utf-8?b?w6k=?=\r\n =?utf-8?b?w6k=?= x"
    assert subject.value == "éé x"  # whitespace between encoded words goes
    assert message.headers[1].value == "café"  # raw 8-bit, not UTF-8: windows-1252


def test_utf8_headers_and_idna_domains():
    raw = "From: Jöran <jöran@bücher.example>\r\nTo: x@xn--bcher-kva.example\r\n\r\nhi".encode()
    message = parse_message(raw)
    assert message.from_[0].name == "Jöran"
    assert message.from_[0].address == "jöran@bücher.example"
    assert message.from_[0].ascii_domain == "xn--bcher-kva.example"
    assert message.to[0].ascii_domain == "xn--bcher-kva.example"


def test_encoded_word_split_inside_a_character_survives():
    # "é" is C3 A9 in UTF-8: split across two encoded words
    raw = b"Subject: =?utf-8?q?caf=C3?= =?utf-8?q?=A9?=\r\n\r\n"
    assert parse_message(raw).subject == "café"


@pytest.mark.parametrize(
    ("field", "name", "expected"),
    [
        (b"Subject: =?iso-8859-1?Q?Gr\xfc\xdfe_aus_K\xf6ln?=", "subject", "Grüße aus Köln"),
        (b"Subject: =?ISO-8859-2?q?P\xf3\xb3_ceny?= now", "subject", "Pół ceny now"),
        (b"Subject: =?koi8-r?Q?\xf0\xd2\xc9\xd7\xc5\xd4?=", "subject", "Привет"),
        (b"Subject: =?utf-8?Q?Z\xc3\xb6e?= =?utf-8?Q?_\xe2\x82\xac?=", "subject", "Zöe €"),
        (b"From: =?iso-8859-1?Q?J=FCrgen_M\xfcller?= <jm@example.com>", "from", "Jürgen Müller"),
        (b"From: =?iso-8859-1?Q?M\xfcller,_Hans?= <hm@example.com>", "from", "Müller, Hans"),
        (b'To: "=?windows-1252?Q?\x93Zo\xeb\x94?=" <z@example.org>', "to", "“Zoë”"),
    ],
)
def test_8bit_bytes_inside_encoded_words_take_the_words_charset(field, name, expected):
    """Older mail programs write raw 8-bit bytes inside encoded words: they are the word's
    charset, never windows-1252 guessed for the field, and never left undecoded."""
    message = parse_message(field + b"\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n")
    if name == "subject":
        assert message.subject == expected
    else:
        [address] = message.from_ if name == "from" else message.to
        assert address.name == expected
        assert "@" in address.address


def test_smime_signature_is_a_signature_not_an_attachment():
    raw = (
        b"From: a@example.com\r\nTo: b@example.org\r\nSubject: signed\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
        b'micalg=sha-256; boundary="s"\r\n\r\n'
        b"--s\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n"
        b"--m\r\nContent-Type: text/plain\r\n\r\nSee the report.\r\n"
        b"--m\r\nContent-Type: application/pdf; name=report.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--m--\r\n"
        b"--s\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n"
        b"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=smime.p7s\r\n"
        b"\r\nMIIGAAYJKoZIhvcNAQcCoIIF8TCCBe0=\r\n--s--\r\n"
    )
    message = parse_message(raw)
    assert message.text == "See the report."
    assert [a.filename for a in message.attachments] == ["report.pdf"]
    [signature] = message.signatures
    assert (signature.content_type, signature.protocol, signature.micalg, signature.filename) == (
        "application/pkcs7-signature",
        "application/pkcs7-signature",
        "sha-256",
        "smime.p7s",
    )
    assert signature.size == len(base64.b64decode("MIIGAAYJKoZIhvcNAQcCoIIF8TCCBe0="))


def test_openpgp_and_lone_pkcs7_signatures():
    pgp = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/signed; protocol="application/pgp-signature"; '
        b'micalg=pgp-sha512; boundary="p"\r\n\r\n'
        b"--p\r\nContent-Type: text/plain\r\n\r\nHello.\r\n"
        b"--p\r\nContent-Type: application/pgp-signature; name=signature.asc\r\n\r\n"
        b"-----BEGIN PGP SIGNATURE-----\r\n\r\niQEz\r\n-----END PGP SIGNATURE-----\r\n--p--\r\n"
    )
    message = parse_message(pgp)
    assert (message.text, message.attachments) == ("Hello.", [])
    assert [(s.content_type, s.micalg) for s in message.signatures] == [
        ("application/pgp-signature", "pgp-sha512")
    ]
    lone = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=m"
        b"\r\n\r\n--m\r\nContent-Type: text/plain\r\n\r\nHi\r\n--m\r\n"
        b"Content-Type: application/x-pkcs7-signature; name=smime.p7s\r\n\r\nxyz\r\n--m--\r\n"
    )
    message = parse_message(lone)
    assert message.attachments == []
    assert [(s.content_type, s.protocol) for s in message.signatures] == [
        ("application/x-pkcs7-signature", None)
    ]


@pytest.mark.parametrize(
    ("charset", "body", "text"),
    [
        ("iso-8859-1", "café".encode("latin-1"), "café"),
        ("windows-1252", b"\x93quoted\x94", "\u201cquoted\u201d"),
        ("utf-8", "naïve".encode(), "naïve"),
        ("x-no-such-charset", "naïve".encode(), "naïve"),  # unknown: UTF-8 it is
        ("us-ascii", "naïve".encode(), "naïve"),  # mislabelled UTF-8
        ("gb2312", "你好".encode("gb2312"), "你好"),
        ("ks_c_5601-1987", "안녕".encode("cp949"), "안녕"),
        ("iso-2022-jp", "まみむめも".encode("iso2022_jp"), "まみむめも"),
        ("utf-8", b"bad \xff byte", "bad \ufffd byte"),
    ],
)
def test_body_charsets_never_crash(charset, body, text):
    raw = (
        f"Subject: x\r\nContent-Type: text/plain; charset={charset}\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode() + body
    assert parse_message(raw).text == text


def test_alternative_gives_one_text_and_one_html():
    raw = mime(
        b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        b"--alt\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
        b"--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"<p>caf=C3=A9 =\r\nsoft</p>\r\n--alt--",
        b"Content-Type: text/plain\r\n\r\nfooter",
    )
    message = parse_message(raw)
    assert message.text == "plain\nfooter"
    assert message.html == "<p>café soft</p>"
    assert message.attachments == []


def test_attachment_filenames_from_every_convention():
    payload = base64.b64encode(b"%PDF-1.4 fake").decode()
    parts = [
        (
            f"Content-Type: application/pdf\r\nContent-Disposition: attachment; "
            f"filename*=UTF-8''%E2%82%AC%20rates.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{payload}"
        ),
        "Content-Type: application/pdf\r\nContent-Disposition: attachment; "
        'filename="=?UTF-8?B?w6l0w6kucGRm?="\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        + payload,
        'Content-Type: application/octet-stream; name="legacy name.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n" + payload,
        "Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n"
        " filename*0*=utf-8''%C3%A9t%C3%A9; filename*1=\".pdf\"\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n" + payload,
    ]
    message = parse_message(mime(*(p.encode() for p in parts)))
    names = [a.filename for a in message.attachments]
    assert names == ["€ rates.pdf", "été.pdf", "legacy name.pdf", "été.pdf"]
    for attachment in message.attachments:
        assert attachment.size == len(b"%PDF-1.4 fake")
        assert attachment.sha256 == hashlib.sha256(b"%PDF-1.4 fake").hexdigest()
        assert attachment.sniffed_type == "application/pdf"
        assert attachment.disposition == "attachment"
    assert message.attachments[2].content_type == "application/octet-stream"


def test_inline_image_and_content_id():
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
    raw = mime(
        b"Content-Type: text/html\r\n\r\n<img src=cid:logo@x>",
        b"Content-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(png),
    )
    attachment = parse_message(raw).attachments[0]
    assert (attachment.disposition, attachment.content_id) == ("inline", "logo@x")
    assert attachment.sniffed_type == "image/png"
    assert attachment.size == len(png)


def test_nested_message_is_parsed_and_hashed_as_sent():
    inner = (
        b"From: Carol <carol@example.net>\r\nSubject: inner\r\nContent-Type: multipart/mixed; "
        b'boundary="in"\r\n\r\n--in\r\nContent-Type: text/plain\r\n\r\ninner text\r\n'
        b"--in\r\nContent-Type: application/zip; name=a.zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(b"PK\x03\x04zipzip")
        + b"\r\n--in--\r\n"
    )
    raw = mime(
        b"Content-Type: text/plain\r\n\r\nsee attached",
        b"Content-Type: message/rfc822\r\nContent-Disposition: attachment; filename=fwd.eml\r\n\r\n"
        + inner,
    )
    message = parse_message(raw)
    forwarded = message.attachments[0]
    assert forwarded.content_type == "message/rfc822"
    assert forwarded.filename == "fwd.eml"
    assert forwarded.size == len(inner)
    assert forwarded.sha256 == hashlib.sha256(inner).hexdigest()
    assert forwarded.message is not None
    assert forwarded.message.subject == "inner"
    assert forwarded.message.text == "inner text"
    assert forwarded.message.attachments[0].filename == "a.zip"
    assert forwarded.message.attachments[0].sniffed_type == "application/zip"
    assert message.text == "see attached"  # the forwarded text is not ours


def test_base64_encoded_nested_message():
    inner = b"Subject: wrapped\r\n\r\nwrapped body\r\n"
    raw = mime(
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(inner)
    )
    attachment = parse_message(raw).attachments[0]
    assert attachment.message is not None
    assert attachment.message.subject == "wrapped"
    assert attachment.size == len(inner)


def test_uuencode_in_a_text_body_and_as_transfer_encoding():
    import binascii  # noqa: PLC0415

    content = b"uuencoded content \x00\x01\x02" * 5
    lines = b"".join(binascii.b2a_uu(content[i : i + 45]) for i in range(0, len(content), 45))
    block = b"begin 644 data.bin\r\n" + lines.replace(b"\n", b"\r\n") + b"`\r\nend\r\n"
    message = parse_message(b"Subject: uu\r\n\r\nbefore\r\n" + block + b"after\r\n")
    assert message.text == "before\nafter\n"
    assert [(a.filename, a.size) for a in message.attachments] == [("data.bin", len(content))]
    as_encoding = parse_message(
        mime(
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
            + block
        )
    )
    attachment = as_encoding.attachments[0]
    assert (attachment.filename, attachment.size) == ("data.bin", len(content))
    assert attachment.sha256 == hashlib.sha256(content).hexdigest()


def test_flags():
    message = parse_message(
        b"Subject: away\r\nAuto-Submitted: auto-replied\r\nPrecedence: bulk\r\n"
        b"List-Id: <news.example.com>\r\nDisposition-Notification-To: a@example.com\r\n\r\n"
    )
    assert message.auto_submitted
    assert message.auto_reply
    assert message.bulk
    assert message.list_id == "<news.example.com>"
    assert message.read_receipt_requested
    plain = parse_message(b"Subject: hi\r\nAuto-Submitted: no\r\n\r\n")
    assert not (plain.auto_submitted)
    assert not (plain.auto_reply)
    assert not (plain.bulk)
    assert not (plain.dsn)


def test_delivery_status_notification():
    status = (
        b"Reporting-MTA: dns; mx.example.com\r\n\r\n"
        b"Final-Recipient: rfc822; gone@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"
    )
    raw = (
        b"From: MAILER-DAEMON@example.com\r\nSubject: Undelivered\r\nContent-Type: multipart/report; "
        b'report-type=delivery-status; boundary="r"\r\n\r\n'
        b"--r\r\nContent-Type: text/plain\r\n\r\nIt bounced.\r\n"
        b"--r\r\nContent-Type: message/delivery-status\r\n\r\n" + status + b"\r\n"
        b"--r\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: the original\r\nMessage-ID: <o@x>\r\n\r\n"
        b"--r--\r\n"
    )
    message = parse_message(raw)
    assert message.dsn
    assert message.report_type == "delivery-status"
    assert message.text == "It bounced."
    [entry] = message.delivery_status
    assert (entry.final_recipient, entry.action, entry.status) == (
        "gone@example.com",
        "failed",
        "5.1.1",
    )
    assert entry.diagnostic_code == "550 5.1.1 no such user"
    returned = message.attachments[1].message
    assert returned is not None
    assert returned.subject == "the original"
    assert returned.message_id == "o@x"


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_line_endings_and_chunking_do_not_change_the_result(ending):
    raw = mime(
        b"Content-Type: text/plain\r\n\r\nfirst",
        b"Content-Type: application/octet-stream; name=x.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(bytes(range(256)) * 40),
        b"Content-Type: text/plain\r\nContent-Disposition: inline\r\n\r\n--b0undaryish\r\nlast",
    ).replace(b"\r\n", ending)
    whole = parse_message(raw)
    assert whole.attachments[0].size == 256 * 40
    assert whole.text is not None
    assert whole.text.endswith("--b0undaryish\nlast")
    for most in (1, 2, 5, 64, 1000):
        assert parse_stream(Trickle(raw, most)) == whole


def test_similar_boundaries_do_not_cut_parts_short():
    raw = (
        b'Subject: x\r\nContent-Type: multipart/mixed; boundary="abc"\r\n\r\n'
        b'--abc\r\nContent-Type: multipart/alternative; boundary="abc-2"\r\n\r\n'
        b"--abc-2\r\nContent-Type: text/plain\r\n\r\ninner\r\n--abc-2--\r\n"
        b"--abc\r\nContent-Type: text/html\r\n\r\n<b>x</b>\r\n--abc--\r\n"
    )
    message = parse_message(raw)
    assert (message.text, message.html) == ("inner", "<b>x</b>")


def test_broken_structures_become_defects():
    missing_close = (
        b'Subject: x\r\nContent-Type: multipart/mixed; boundary="z"\r\n\r\n'
        b"--z\r\nContent-Type: text/plain\r\n\r\nunclosed"
    )
    message = parse_message(missing_close)
    assert message.text == "unclosed"
    assert any("closing boundary" in d for d in message.defects)
    weird = parse_message(
        b"Subject: x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"aGVsbG8=IHdvcmxk!!\r\nd"
    )
    assert weird.text is not None
    assert weird.text.startswith("hello world")
    assert weird.unreadable is None


def test_not_a_message_is_unreadable():
    assert parse_message(b"").unreadable == "empty message"
    binary = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(300)
    assert parse_message(binary).unreadable == "no header fields: not a message"


@pytest.mark.parametrize(
    ("limits", "raw", "reason"),
    [
        (
            ParseLimits(max_depth=3),
            b"Subject: deep\r\n"
            + b"".join(
                f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
                for i in range(6)
            ),
            "MIME nesting deeper than 3",
        ),
        (
            ParseLimits(max_parts=5),
            mime(*[b"Content-Type: text/plain\r\n\r\nx"] * 10),
            "more than 5 MIME parts",
        ),
        (
            ParseLimits(max_header_fields=10),
            b"".join(f"X-H{i}: v\r\n".encode() for i in range(20)) + b"\r\nbody",
            "more than 10 header fields",
        ),
        (
            ParseLimits(max_header_bytes=2048),
            b"Subject: " + b"x" * 5000 + b"\r\n\r\nbody",
            "header section larger than 2048 bytes",
        ),
        (
            ParseLimits(max_decoded_bytes=4096),
            mime(
                b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                + base64.encodebytes(bytes(10000))
            ),
            "more than 4096 bytes decoded",
        ),
    ],
)
def test_limits_stop_the_parse_with_a_reason(limits, raw, reason):
    message = parse_message(raw, limits=limits)
    assert message.unreadable is not None
    assert reason in message.unreadable
    assert message.size == len(raw)  # the digest still covers every byte
    assert message.sha256 == hashlib.sha256(raw).hexdigest()


def test_store_keeps_each_attachment_by_digest():
    store = Store()
    content = bytes(range(256)) * 100
    raw = mime(
        b"Content-Type: application/octet-stream; name=a.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(content)
    )
    attachment = parse_message(raw, store=store).attachments[0]
    assert attachment.key == f"attachments/{attachment.sha256}"
    assert store.content[attachment.sha256] == content
    assert parse_message(raw).attachments[0].key is None  # without a store, nothing is kept


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Windows\\evil.exe", "evil.exe"),
        ("report\u202eexe.pdf", "report_exe.pdf"),  # right-to-left override spoofing
        ("tab\there\x00.txt", "tab_here_.txt"),
        ("CON.txt", "_CON.txt"),
        ("nul", "_nul"),
        ("..", "attachment-0123456789ab.pdf"),
        (None, "attachment-0123456789ab.pdf"),
        ('a<b>c:"d|e?f*.txt', "a_b_c__d_e_f_.txt"),
        ("x" * 300 + ".docx", "x" * 175 + ".docx"),
    ],
)
def test_safe_filenames(name, safe):
    assert safe_filename(name, "0123456789abcdef" * 4, "application/pdf") == safe


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"%PDF-1.7", "application/pdf"),
        (b"MZ\x90\x00", "application/vnd.microsoft.portable-executable"),
        (
            b"PK\x03\x04" + bytes(26) + b"word/document.xml",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        (b"PK\x03\x04" + bytes(40), "application/zip"),
        (b"  <!DOCTYPE html><html>", "text/html"),
        (b"plain words\r\n", "text/plain"),
        (b"\x00\x01\x02\x03binary", None),
        (b"", None),
    ],
)
def test_sniffing(head, kind):
    assert sniff(head) == kind
