"""`mxgate auth spf` and `mxgate auth check` against a DNS server on loopback (--resolver), the
SPF record so large that its UDP answer comes back truncated and the resolver asks again over
TCP, as name servers make it do."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator

import dkim
import pytest

from mxgate.authn import keys
from mxgate.authn.arc import Sealer
from mxgate.authn.check import Authenticator
from mxgate.authn.resolver import CachingResolver
from mxgate.cli import main
from mxgate.message.headers import prepend_headers
from tests.dnsserver import Zone, ZoneServer, silent_port
from tests.mailtools import Keys, make_keys

# An SPF record past 512 bytes: its UDP answer is truncated, the resolver must go to TCP.
BIG_SPF = (
    "v=spf1 " + " ".join(f"ip4:198.51.100.{i}" for i in range(1, 60)) + " ip4:192.0.2.0/24 -all"
)
RAW = (
    b"From: Alice <alice@example.test>\r\nTo: bob@nutrition.co\r\nSubject: figures\r\n"
    b"Message-ID: <f1@example.test>\r\n\r\nThe figures.\r\n"
)


@pytest.fixture(scope="module")
def dkim_keys() -> Keys:
    return make_keys()


@pytest.fixture(scope="module")
def server(dkim_keys: Keys) -> Iterator[ZoneServer]:
    zone = Zone()
    zone.add("example.test", "TXT", BIG_SPF)
    zone.add("mx.example.test", "TXT", "v=spf1 a -all")
    zone.add("mx.example.test", "A", "192.0.2.25")
    zone.add("sel._domainkey.example.test", "TXT", f"v=DKIM1; k=rsa; p={dkim_keys.public}")
    zone.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject")
    zone.add("arc._domainkey.sealer.test", "TXT", f"v=DKIM1; k=rsa; p={dkim_keys.public}")
    server = ZoneServer(zone, udp_limit=512)
    yield server
    server.stop()


def _resolver(server: ZoneServer) -> str:
    return f"127.0.0.1:{server.port}"


def test_auth_spf_json(server, capsys):
    before = server.zone.transports["tcp"]
    arguments = ["auth", "spf", "--ip", "192.0.2.25", "--mail-from", "alice@example.test"]
    arguments += ["--helo", "mx.example.test", "--resolver", _resolver(server), "--json"]
    assert main(arguments) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["result"] == "pass"
    assert document["reason"] == "192.0.2.25 is permitted by example.test ip4:192.0.2.0/24"
    assert (document["identity"], document["domain"]) == ("mailfrom", "example.test")
    assert (document["helo"]["result"], document["helo"]["domain"]) == ("pass", "mx.example.test")
    assert server.zone.transports["tcp"] > before  # the truncated answer was asked again over TCP


@pytest.mark.parametrize(
    ("ip", "mail_from", "result"),
    [
        ("203.0.113.9", "alice@example.test", "fail"),
        ("203.0.113.9", "alice@nowhere.test", "none"),
        ("203.0.113.9", "", "fail"),  # a bounce: postmaster@HELO, whose record says -all
    ],
)
def test_auth_spf_results_in_rfc_words(server, capsys, ip, mail_from, result):
    arguments = ["auth", "spf", "--ip", ip, "--mail-from", mail_from, "--helo", "mx.example.test"]
    assert main([*arguments, "--resolver", _resolver(server)]) == 0
    assert capsys.readouterr().out.startswith(f"{result} (")


def test_auth_spf_dns_down_is_temperror(capsys):
    arguments = ["auth", "spf", "--ip", "192.0.2.1", "--mail-from", "a@example.test"]
    arguments += ["--helo", "h.example.test", "--resolver", f"127.0.0.1:{silent_port()}"]
    assert main([*arguments, "--timeout", "0.3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["result"] == "temperror"


@pytest.mark.parametrize("bad", ["example.test:53", "127.0.0.1:0", "127.0.0.1:x", "[::1]5353"])
def test_a_bad_resolver_is_a_usage_error(capsys, bad):
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "auth",
                "spf",
                "--ip",
                "192.0.2.1",
                "--mail-from",
                "",
                "--helo",
                "h",
                "--resolver",
                bad,
            ]
        )
    assert exit_.value.code == 2
    assert "--resolver" in capsys.readouterr().err


def _sealed(dkim_keys: Keys, server: ZoneServer) -> bytes:
    """A message signed by example.test, then sealed by a gateway before us (sealer.test)."""
    signed = dkim.sign(RAW, b"sel", b"example.test", dkim_keys.private) + RAW
    sealer = Sealer("sealer.test", "arc", keys.load_private_key(dkim_keys.private))
    authenticator = Authenticator(CachingResolver(server.resolver()), "sealer.test", sealer=sealer)
    _, fields = authenticator.trace_fields(
        io.BytesIO(signed), client_ip="192.0.2.25", mail_from="alice@example.test", helo="mx"
    )
    return prepend_headers(signed, fields)


def test_auth_check_json(server, dkim_keys, capsys, tmp_path):
    path = tmp_path / "sealed.eml"
    path.write_bytes(_sealed(dkim_keys, server))
    arguments = ["auth", "check", str(path), "--ip", "203.0.113.9", "--mail-from"]
    arguments += ["alice@example.test", "--helo", "relay.sealer.test"]
    assert main([*arguments, "--resolver", _resolver(server), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["spf"]["result"], document["spf"]["reason"]) == (
        "fail",
        "203.0.113.9 is not permitted by example.test -all",
    )
    [signature] = document["dkim"]
    assert (signature["result"], signature["domain"]) == ("pass", "example.test")
    assert document["dmarc"]["result"] == "pass"
    assert document["arc"] == {
        "result": "pass",
        "reason": "chain of 1 sealed by sealer.test",
        "instances": 1,
        "sealers": ["sealer.test"],
    }
    for name in ("spf", "dmarc", "arc"):
        assert set(document[name]) >= {"result", "reason"}
    results = document["authentication_results"]
    assert results.startswith("mxgate.local;")
    assert "arc=pass (chain of 1 sealed by sealer.test)" in results
    assert "dkim=pass (valid signature of example.test) header.d=example.test" in results


def test_auth_check_human_and_the_installed_command(server, dkim_keys, tmp_path):
    path = tmp_path / "sealed.eml"
    path.write_bytes(_sealed(dkim_keys, server).replace(b"The figures.", b"Other figures."))
    command = [sys.executable, "-m", "mxgate", "auth", "check", str(path), "--ip", "192.0.2.25"]
    command += ["--mail-from", "alice@example.test", "--helo", "mx.example.test"]
    command += ["--resolver", _resolver(server), "--hostname", "gw.nutrition.test"]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[3:7]}
    assert rows["DKIM"][1:4] == ["example.test", "s=sel", "fail"]
    assert rows["ARC"][1:4] == ["1", "sets", "fail"]
    assert "ARC-Message-Signature's body hash did not verify" in done.stdout
    assert "Mail Manager verdicts: SPF PASS, DKIM FAIL" in done.stdout
    assert "Authentication-Results: gw.nutrition.test;" in done.stdout


def test_auth_check_missing_file(capsys, tmp_path):
    arguments = ["auth", "check", str(tmp_path / "nope.eml"), "--ip", "192.0.2.1"]
    assert main([*arguments, "--mail-from", "", "--helo", "h", "--resolver", "127.0.0.1:9"]) == 1
    assert "nope.eml" in capsys.readouterr().err
