"""Messages the gateway writes itself: claim-check stubs and DSNs (RFC 3464 / RFC 6522)."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

from mxgate.delivery.claimcheck import CLAIM_CHECK_HEADER, claim_check_stub
from mxgate.message.dsn import expiry_dsn, should_notify
from mxgate.message.parse import parse_message

ORIGINAL = (
    b"From: Buyer <buyer@shop.example>\r\nTo: alice@nutrition.co\r\nCc: bob@nutrition.co\r\n"
    b"Subject: big plans\r\nMessage-ID: <plans@shop.example>\r\n"
    b"Date: Mon, 02 Jun 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
    b"see attached\r\n--b\r\nContent-Type: application/pdf\r\n"
    b'Content-Disposition: attachment; filename="plans.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n"
)


def test_claim_check_stub_says_what_it_was_and_links_to_it():
    stub = claim_check_stub(
        parse_message(ORIGINAL),
        size=45_000_000,
        limit=41_943_040,
        link="https://bucket.example/raw/X?sig=1",
        gateway_host="mxgate.local",
    )
    parsed = message_from_bytes(stub, policy=policy.default)
    assert parsed["From"] == "Buyer <buyer@shop.example>"
    assert parsed["To"] == "alice@nutrition.co"
    assert parsed["Cc"] == "bob@nutrition.co"
    assert parsed["Subject"] == "[too large to deliver] big plans"
    assert parsed["References"] == "<plans@shop.example>"
    assert parsed[CLAIM_CHECK_HEADER] == "https://bucket.example/raw/X?sig=1"
    text = parsed.get_content()
    assert "https://bucket.example/raw/X?sig=1" in text
    assert "45.0 MB" in text
    assert "plans.pdf" in text
    assert len(stub) < 4000
    assert b"\r\n" in stub
    assert b"\n" not in stub.replace(b"\r\n", b"")


def test_expiry_dsn_is_a_delivery_status_report():
    now = datetime(2025, 6, 7, 10, 0, tzinfo=UTC)
    dsn = expiry_dsn(
        original=ORIGINAL,
        envelope_sender="bounces@shop.example",
        recipients=["alice@nutrition.co", "bob@nutrition.co"],
        diagnostic="451 4.3.0 mailbox host unavailable",
        reporting_mta="mxgate.local",
        dsn_from="mailer-daemon@nutrition.co",
        arrival=datetime(2025, 6, 2, 10, 0, tzinfo=UTC),
        last_attempt=now,
        envelope_id="01ABC",
    )
    report = message_from_bytes(dsn, policy=policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report["To"] == "bounces@shop.example"
    assert report["Auto-Submitted"] == "auto-replied"
    human, status, headers = report.iter_parts()
    assert "alice@nutrition.co" in human.get_content()
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    assert blocks[0]["Reporting-MTA"] == "dns; mxgate.local"
    assert blocks[0]["Arrival-Date"] == "Mon, 02 Jun 2025 10:00:00 +0000"
    assert [b["Final-Recipient"] for b in blocks[1:]] == [
        "rfc822; alice@nutrition.co",
        "rfc822; bob@nutrition.co",
    ]
    assert {b["Status"] for b in blocks[1:]} == {"4.4.7"}
    assert {b["Action"] for b in blocks[1:]} == {"failed"}
    assert blocks[1]["Diagnostic-Code"] == "smtp; 451 4.3.0 mailbox host unavailable"
    assert headers.get_content_type() == "text/rfc822-headers"
    assert "Subject: big plans" in headers.get_payload()
    assert "see attached" not in headers.get_payload()  # headers only, never the body


def test_never_a_dsn_to_the_null_sender_or_a_robot():
    assert should_notify("bounces@shop.example")
    assert not should_notify("")
    assert not should_notify("MAILER-DAEMON@shop.example")
    assert not should_notify("postmaster@shop.example")
