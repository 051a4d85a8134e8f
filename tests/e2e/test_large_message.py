"""A 40 MB message through the whole local path (`mxgate run`: the traffic policy, the spool,
the rule set with Archive and WriteToS3, the parse, SPF/DKIM/DMARC, delivery to a mailbox host
over SMTP): it arrives byte for byte under the gateway's trace fields, and its DKIM signature
still verifies. Every stage streams it from a file (docs/benchmarks.md, "Large messages")."""

from __future__ import annotations

import base64
import hashlib
import os
import smtplib

import dkim
import pytest

from tests.dnsserver import Zone, ZoneServer, dkimpy_dnsfunc
from tests.mailtools import make_keys
from tests.support import wait_for

pytestmark = pytest.mark.e2e

SENDER = "orders@shop.example"
SIZE = 40_000_000  # under MaxMessageSizeBytes (40 MiB)


def large_message(private_key: bytes) -> bytes:
    """A signed message of about SIZE bytes: a line of text, a base64 attachment, and a body
    line that starts with a dot (stuffed on the wire, unstuffed at each end)."""
    head = (
        f"From: Shop <{SENDER}>\r\nTo: alice@nutrition.co\r\nSubject: the catalogue\r\n"
        "Message-ID: <catalogue@shop.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nThe catalogue, attached.\r\n.signed off\r\n"
        "--b\r\nContent-Type: application/octet-stream; name=catalogue.bin\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    tail = b"--b--\r\n"
    data = os.urandom((SIZE - len(head) - len(tail)) * 57 // 78)
    raw = head + base64.encodebytes(data).replace(b"\n", b"\r\n") + tail
    signature = dkim.sign(
        raw,
        b"big",
        b"shop.example",
        private_key,
        canonicalize=(b"relaxed", b"simple"),
        include_headers=[b"from", b"to", b"subject", b"message-id"],
    )
    return signature + raw


def test_a_40_mb_message_is_delivered_byte_exact_and_its_signature_verifies(gateway_factory):
    keys = make_keys()
    zone = Zone()
    zone.add("shop.example", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    zone.add("big._domainkey.shop.example", "TXT", f"v=DKIM1; k=rsa; p={keys.public}")
    dns = ZoneServer(zone)
    try:
        gateway = gateway_factory(
            dns={"nameservers": ["127.0.0.1"], "port": dns.port, "timeout": 2}
        )
        raw = large_message(keys.private)
        with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=120) as smtp:
            smtp.sendmail(SENDER, ["alice@nutrition.co"], raw)
        new = gateway.mailbox("workspace", "alice@nutrition.co")
        (path,) = wait_for(lambda: list(new.iterdir()) if new.is_dir() else None, timeout=120)
        stored = path.read_bytes()
        assert hashlib.sha256(stored[-len(raw) :]).digest() == hashlib.sha256(raw).digest()
        trace = stored[: -len(raw)]  # what the gateway and the mailbox host put on top
        assert b"\r\n\r\n" not in trace
        assert b"dkim=pass header.d=shop.example" in trace.replace(b"\r\n\t", b" ")
        assert dkim.verify(stored, dnsfunc=dkimpy_dnsfunc(dns.resolver()))
    finally:
        dns.stop()
