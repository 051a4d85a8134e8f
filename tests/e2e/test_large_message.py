"""A 40 MB message through the whole local path (`mxgate run`: the traffic policy, the spool,
the rule set with Archive and WriteToS3, the parse, SPF/DKIM/DMARC, delivery to a mailbox host
over SMTP): it arrives byte for byte under the gateway's trace fields, and its DKIM signature
still verifies. Every stage streams it from a file (docs/benchmarks.md, "Large messages")."""

from __future__ import annotations

import base64
import hashlib
import os

import dkim
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.dnsserver import Zone, ZoneServer, dkimpy_dnsfunc
from tests.mailtools import make_keys
from tests.support import connect, wait_for

pytestmark = pytest.mark.e2e

SENDER = "orders@shop.example"
SIZE = 40_000_000  # under MaxMessageSizeBytes (40 MiB)


def relaxed(name: bytes, value: bytes) -> bytes:
    """RFC 6376 3.4.2: a header field in relaxed canonical form (no CRLF)."""
    return name.strip().lower() + b":" + b" ".join(value.split())


def dkim_signed(raw: bytes, key_pem: bytes) -> bytes:
    """`raw` with a DKIM-Signature (rsa-sha256, relaxed/simple) of its From, To, Subject and
    Message-ID. Signed here, not by dkimpy, whose parse of a 40 MB message takes seconds;
    dkimpy is the one that verifies, so a wrong signature here fails the test."""
    header, body = raw.split(b"\r\n\r\n", 1)  # simple body: as it is (it ends in one CRLF)
    fields = dict(line.split(b":", 1) for line in header.split(b"\r\n"))
    names = [b"From", b"To", b"Subject", b"Message-ID"]
    body_hash = base64.b64encode(hashlib.sha256(body).digest()).decode()
    tags = (
        "v=1; a=rsa-sha256; c=relaxed/simple; d=shop.example; s=big; "
        f"h={':'.join(n.decode().lower() for n in names)}; bh={body_hash}; b="
    )
    signed = b"".join(relaxed(n, fields[n]) + b"\r\n" for n in names)
    signed += relaxed(b"DKIM-Signature", tags.encode())
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signature = key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    return f"DKIM-Signature: {tags}{base64.b64encode(signature).decode()}\r\n".encode() + raw


def large_message(key_pem: bytes) -> bytes:
    """A signed message of about SIZE bytes: a line of text, a base64 attachment (a random
    block, repeated), and body lines that start with a dot (stuffed on the wire)."""
    head = (
        f"From: Shop <{SENDER}>\r\nTo: alice@nutrition.co\r\nSubject: the catalogue\r\n"
        "Message-ID: <catalogue@shop.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nThe catalogue, attached.\r\n.signed off\r\n"
        "--b\r\nContent-Type: application/octet-stream; name=catalogue.bin\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    tail = b"--b--\r\n"
    block = base64.encodebytes(os.urandom(999_999)).replace(b"\n", b"\r\n") + b".\r\n"
    encoded = block * ((SIZE - len(head) - len(tail)) // len(block))
    return dkim_signed(head + encoded + tail, key_pem)


def test_a_40_mb_message_is_delivered_byte_exact_and_its_signature_verifies(gateway_factory):
    keys = make_keys(1024)
    zone = Zone()
    zone.add("shop.example", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    zone.add("big._domainkey.shop.example", "TXT", f"v=DKIM1; k=rsa; p={keys.public}")
    dns = ZoneServer(zone)
    try:
        gateway = gateway_factory(
            dns={"nameservers": ["127.0.0.1"], "port": dns.port, "timeout": 2}
        )
        raw = large_message(keys.private)
        with connect(gateway.smtp_port, tls=True) as smtp:
            smtp.sendmail(SENDER, ["alice@nutrition.co"], raw)
        new = gateway.mailbox("workspace", "alice@nutrition.co")
        (path,) = wait_for(lambda: list(new.iterdir()) if new.is_dir() else None, timeout=120)
        stored = path.read_bytes()
        assert hashlib.sha256(stored[-len(raw) :]).digest() == hashlib.sha256(raw).digest()
        trace = stored[: -len(raw)]  # what the gateway and the mailbox host put on top
        assert b"\r\n\r\n" not in trace
        assert b"dkim=pass (valid signature of shop.example) header.d=shop.example" in trace
        assert dkim.verify(stored, dnsfunc=dkimpy_dnsfunc(dns.resolver()))
    finally:
        dns.stop()
