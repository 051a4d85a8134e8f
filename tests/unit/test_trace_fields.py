"""The `Received` field names the session's protocol as RFC 3848 does, with the TLS details, and
the sending address as an address literal (where providers look for it)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mxgate.records import Envelope
from mxgate.workflow.received import received_value

WHEN = datetime(2026, 11, 28, 8, 30, tzinfo=UTC)


def envelope(**session: object) -> Envelope:
    return Envelope(
        message_id="01M8",
        mail_from="buyer@shop.example",
        recipients=["alice@nutrition.co"],
        helo="mx.shop.example",
        source_ip="203.0.113.9",
        **session,
    )


TLS13 = {
    "tls_protocol": "TLS1_3",
    "tls_cipher": "TLS_AES_256_GCM_SHA384",
    "tls_cipher_bits": 256,
}


@pytest.mark.parametrize(
    ("session", "expected"),
    [
        ({}, "from mx.shop.example ([203.0.113.9]) by mxgate.local (mxgate) with ESMTP id 01M8"),
        (
            TLS13,
            (
                "from mx.shop.example ([203.0.113.9]) (using TLSv1.3 with cipher "
                "TLS_AES_256_GCM_SHA384 (256 bits)) by mxgate.local (mxgate) with ESMTPS id 01M8"
            ),
        ),
        (
            {**TLS13, "authenticated": True},
            (
                "from mx.shop.example ([203.0.113.9]) (using TLSv1.3 with cipher "
                "TLS_AES_256_GCM_SHA384 (256 bits)) by mxgate.local (mxgate) with ESMTPSA id 01M8"
            ),
        ),
        (
            {"authenticated": True},
            "from mx.shop.example ([203.0.113.9]) by mxgate.local (mxgate) with ESMTPA id 01M8",
        ),
        (
            {"tls_protocol": "TLS1_2"},  # a session recorded before ciphers were
            (
                "from mx.shop.example ([203.0.113.9]) (using TLSv1.2) by mxgate.local (mxgate) "
                "with ESMTPS id 01M8"
            ),
        ),
    ],
)
def test_received_names_the_protocol_and_the_tls_session(session, expected):
    value = received_value(envelope(**session), "mxgate.local", "01M8", WHEN)
    assert value == f"{expected}; Sat, 28 Nov 2026 08:30:00 +0000"
