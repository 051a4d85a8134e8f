"""`mxgate parse`: the human summary, the JSON model, and --auth through the configured DNS."""

from __future__ import annotations

import json

import dkim
import yaml

from mxgate.cli import main
from tests.dnsserver import Zone, ZoneServer
from tests.mailtools import CORPUS, make_keys
from tests.support import SAMPLES

CORPUS_DSN = CORPUS / "mikel-mail" / "multipart_report_emails" / "report_422.eml"


def test_human_output(capsys):
    assert main(["parse", str(SAMPLES / "09-utf8-8bit.eml")]) == 0
    out = capsys.readouterr().out
    assert "Subject" in out
    assert "From" in out
    assert "Message-ID" in out


def test_json_output_has_the_model(capsys, tmp_path):
    raw = (
        b"From: =?utf-8?q?Zo=C3=AB?= <zoe@example.com>\r\nTo: a@example.org\r\nCc: B <b@example.org>\r\n"
        b"Subject: report\r\nMessage-ID: <id-1@example.com>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n'
        b"--m\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the figures.\r\n"
        b"--m\r\nContent-Type: text/csv; name=figures.csv\r\n"
        b"Content-Disposition: attachment; filename=figures.csv\r\n\r\n"
        b"a,b\r\n1,2\r\n--m--\r\n"
    )
    path = tmp_path / "m.eml"
    path.write_bytes(raw)
    assert main(["parse", str(path), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["message_id"] == "id-1@example.com"
    assert document["subject"] == "report"
    assert document["from"] == [
        {"name": "Zoë", "address": "zoe@example.com", "ascii_domain": "example.com"}
    ]
    assert [a["address"] for a in document["to"]] == ["a@example.org"]
    assert document["cc"][0]["name"] == "B"
    assert document["text"] == "See the figures."
    assert document["html"] is None
    [attachment] = document["attachments"]
    assert {k: attachment[k] for k in ("filename", "content_type", "size", "disposition")} == {
        "filename": "figures.csv",
        "content_type": "text/csv",
        "size": len(b"a,b\r\n1,2"),
        "disposition": "attachment",
    }
    assert len(attachment["sha256"]) == 64
    assert document["defects"] == []


def test_dsn_is_shown(capsys):
    assert main(["parse", str(CORPUS_DSN)]) == 0
    out = capsys.readouterr().out
    assert "delivery status notification" in out
    assert "Delivery status: fraser@oooooooo.com.au delayed 4.2.2" in out


def test_auth_uses_the_configured_dns(capsys, tmp_path):
    keys = make_keys()
    zone = Zone()
    zone.add("example.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.add("sel._domainkey.example.test", "TXT", f"v=DKIM1; p={keys.public}")
    zone.add("_dmarc.example.test", "TXT", "v=DMARC1; p=quarantine")
    server = ZoneServer(zone)
    try:
        config = tmp_path / "local.yaml"
        config.write_text(
            yaml.safe_dump(
                {"dns": {"nameservers": ["127.0.0.1"], "port": server.port, "timeout": 2}}
            )
        )
        raw = b"From: a@example.test\r\nTo: b@nutrition.co\r\nSubject: s\r\n\r\nbody\r\n"
        path = tmp_path / "signed.eml"
        path.write_bytes(dkim.sign(raw, b"sel", b"example.test", keys.private) + raw)
        arguments = [
            "parse",
            str(path),
            "--config",
            str(config),
            "--auth",
            "--helo",
            "mx.example.test",
        ]
        assert main([*arguments, "--ip", "198.51.100.1", "--mail-from", "a@example.test"]) == 0
        human = capsys.readouterr().out
        assert (
            "Mail Manager verdicts: SPF FAIL, DKIM PASS, DMARC policy (DMARC did not fail)" in human
        )
        assert "Authentication-Results: mxgate.local;" in human
        altered = path.read_bytes().replace(b"body", b"BODY")
        path.write_bytes(altered)
        assert (
            main([*arguments, "--ip", "198.51.100.1", "--mail-from", "a@example.test", "--json"])
            == 0
        )
        document = json.loads(capsys.readouterr().out)
    finally:
        server.stop()
    verdicts = document["authentication"]["verdicts"]
    assert verdicts == {
        "spf": "FAIL",
        "dkim": "FAIL",
        "dmarc": "FAIL",
        "dmarc_policy": "QUARANTINE",
    }
    assert document["authentication"]["dkim"][0]["reason"].startswith("body hash did not verify")
    assert document["envelope"]["client_ip"] == "198.51.100.1"


def test_missing_file_is_a_clear_error(capsys, tmp_path):
    assert main(["parse", str(tmp_path / "nope.eml")]) == 1
    assert "nope.eml" in capsys.readouterr().err
