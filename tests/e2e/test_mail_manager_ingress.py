"""The template's ingress points over real SMTP (smtplib and swaks): traffic policy, size,
TLS policy, SMTP AUTH on the AUTH ingress point, address lists managed from the command
line, and a rule set Bounce that arrives as a DSN."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    REPO,
    RunningGateway,
    connect,
    local_config,
    start_gateway,
    wait_for,
)
from tests.templates import gateway_template, recipient_is, rule_set, traffic_policy

pytestmark = pytest.mark.e2e

SENDER = "buyer@shop.example"
PASSWORD = "local-Passw0rd"
MAX_SIZE = 4096


def ip_condition(cidr: str) -> dict[str, Any]:
    return {
        "IpExpression": {
            "Evaluate": {"Attribute": "SENDER_IP"},
            "Operator": "CIDR_MATCHES",
            "Values": [cidr],
        }
    }


def tls_at_least(version: str) -> dict[str, Any]:
    return {
        "TlsExpression": {
            "Evaluate": {"Attribute": "TLS_PROTOCOL"},
            "Operator": "MINIMUM_TLS_VERSION",
            "Value": version,
        }
    }


def ours_except(address: str) -> list[dict[str, Any]]:
    return [
        {
            "StringExpression": {
                "Evaluate": {"Attribute": "RECIPIENT"},
                "Operator": "ENDS_WITH",
                "Values": ["@nutrition.co"],
            }
        },
        {
            "StringExpression": {
                "Evaluate": {"Attribute": "RECIPIENT"},
                "Operator": "NOT_EQUALS",
                "Values": [address],
            }
        },
    ]


BLOCKED = {
    "BooleanExpression": {
        "Evaluate": {
            "IsInAddressList": {
                "Attribute": "RECIPIENT",
                "AddressLists": [{"Fn::GetAtt": ["Blocked", "AddressListArn"]}],
            }
        },
        "Operator": "IS_TRUE",
    }
}


def ingress(kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "Type": "AWS::SES::MailManagerIngressPoint",
        "Properties": {
            "Type": kind,
            "TlsPolicy": "OPTIONAL",
            "TrafficPolicyId": {"Ref": "TrafficPolicy"},
            "RuleSetId": {"Ref": "RuleSet"},
            **extra,
        },
    }


def template(directory: Path) -> Path:
    return gateway_template(
        directory,
        {
            "IngressPoint": ingress("OPEN"),
            "SubmissionIngressPoint": ingress(
                "AUTH", IngressPointConfiguration={"SmtpPassword": PASSWORD}
            ),
            "TrafficPolicy": traffic_policy(
                "DENY",
                {"Action": "DENY", "Conditions": [BLOCKED]},
                {
                    "Action": "DENY",
                    "Conditions": [
                        recipient_is("locked@nutrition.co"),
                        ip_condition("127.0.0.0/8"),
                    ],
                },
                {
                    "Action": "ALLOW",
                    "Conditions": [recipient_is("secure@nutrition.co"), tls_at_least("TLS1_2")],
                },
                {"Action": "ALLOW", "Conditions": ours_except("secure@nutrition.co")},
                max_size=MAX_SIZE,
            ),
            "Blocked": {"Type": "AWS::SES::MailManagerAddressList", "Properties": {}},
            "RuleSet": rule_set(
                {
                    "Name": "bounce",
                    "Conditions": [recipient_is("bounce@nutrition.co")],
                    "Actions": [
                        {
                            "Bounce": {
                                "RoleArn": {"Fn::GetAtt": ["MailManagerRole", "Arn"]},
                                "Sender": "postmaster@nutrition.co",
                                "StatusCode": "5.1.1",
                                "SmtpReplyCode": "550",
                                "DiagnosticMessage": "Mailbox does not exist",
                            }
                        }
                    ],
                },
                {
                    "Name": "store",
                    "Unless": [recipient_is("bounce@nutrition.co")],
                    "Actions": [
                        {
                            "WriteToS3": {
                                "S3Bucket": {"Ref": "RawMailBucket"},
                                "S3Prefix": "raw/",
                                "RoleArn": {"Fn::GetAtt": ["MailManagerRole", "Arn"]},
                            }
                        }
                    ],
                },
            ),
        },
    )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    base = tmp_path_factory.mktemp("ingress")
    config_dir = base / "config"
    config_dir.mkdir()
    config = local_config(config_dir, template=str(template(base / "template")), parameters={})
    started = start_gateway(base / "home", config)
    yield started
    started.stop()


def message(to: str, subject: str, body: str = "Hello.\r\n") -> bytes:
    return f"From: {SENDER}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}".encode()


def rcpt(gateway: RunningGateway, recipient: str, *, tls: bool) -> tuple[int, bytes]:
    with connect(gateway.smtp_port, tls=tls) as smtp:
        assert smtp.mail(SENDER)[0] == 250
        return smtp.rcpt(recipient)


def traffic_log(gateway: RunningGateway) -> list[dict[str, Any]]:
    path = gateway.home / "logs" / "traffic-policy.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    ("recipient", "tls", "code", "decided_by"),
    [
        ("alice@nutrition.co", False, 250, "PolicyStatements[3] (ALLOW)"),
        ("alice+news@nutrition.co", False, 250, "PolicyStatements[3] (ALLOW)"),
        ("secure@nutrition.co", False, 550, "DefaultAction (DENY)"),  # TLS1_2 at least
        ("secure@nutrition.co", True, 250, "PolicyStatements[2] (ALLOW)"),
        ("locked@nutrition.co", True, 550, "PolicyStatements[1] (DENY)"),  # from 127.0.0.0/8
        ("someone@elsewhere.example", True, 550, "DefaultAction (DENY)"),
    ],
)
def test_traffic_policy_at_rcpt(gateway, recipient, tls, code, decided_by):
    got, reply = rcpt(gateway, recipient, tls=tls)
    assert got == code
    if code == 550:
        assert reply.startswith(b"5.7.1 Recipient refused by policy")
    record = next(r for r in reversed(traffic_log(gateway)) if r["recipient"] == recipient)
    assert record["decided_by"] == decided_by
    assert record["verdict"] == ("ACCEPT" if code == 250 else "REJECT")
    assert record["ingress_point_id"] == "IngressPoint"
    assert record["tls_protocol"] == ("TLS1_3" if tls else None)
    # every statement is in the record, evaluated or not
    assert sorted(s["index"] for s in record["statements"]) == [0, 1, 2, 3]


def mxgate(gateway: RunningGateway, *args: str) -> subprocess.CompletedProcess[str]:
    config = gateway.home.parent / "config" / "local.yaml"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mxgate",
            *args,
            "--home",
            str(gateway.home),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_address_list_edits_apply_at_once(gateway):
    assert rcpt(gateway, "mallory@nutrition.co", tls=True)[0] == 250
    added = mxgate(
        gateway, "address-list", "add", "Blocked", "mallory@nutrition.co", "*@spam.nutrition.co"
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "Blocked: 2 added, 2 in all"
    assert rcpt(gateway, "mallory@nutrition.co", tls=True)[0] == 550
    assert rcpt(gateway, "x@spam.nutrition.co", tls=True)[0] == 550
    record = traffic_log(gateway)[-1]
    assert record["decided_by"] == "PolicyStatements[0] (DENY)"
    removed = mxgate(gateway, "address-list", "remove", "Blocked", "MALLORY@nutrition.co")
    assert removed.returncode == 0, removed.stderr
    assert rcpt(gateway, "mallory@nutrition.co", tls=True)[0] == 250


def test_size_is_advertised_and_enforced(gateway):
    with connect(gateway.smtp_port, tls=True) as smtp:
        assert int(smtp.esmtp_features["size"]) == MAX_SIZE
        code, reply = smtp.mail(SENDER, [f"SIZE={MAX_SIZE + 1}"])
        assert (code, reply[:5]) == (552, b"5.3.4")
        smtp.rset()
        assert smtp.mail(SENDER)[0] == 250
        assert smtp.rcpt("alice@nutrition.co")[0] == 250
        code, reply = smtp.data(message("alice@nutrition.co", "big", "x" * 70 + "\r\n") * 70)
        assert (code, reply[:5]) == (552, b"5.3.4")


def test_an_open_ingress_point_offers_no_auth(gateway):
    with connect(gateway.smtp_port, tls=True) as smtp:
        assert not smtp.has_extn("auth")
        code, _ = smtp.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0x\0y").decode())
        assert code == 502


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_auth_ingress_point_requires_starttls_then_auth(gateway):
    port = gateway.ports["smtp_auth"]
    with connect(port, tls=False) as smtp:
        assert not smtp.has_extn("auth")  # not offered before STARTTLS
        code, reply = smtp.docmd("AUTH", "PLAIN " + plain("SubmissionIngressPoint", PASSWORD))
        assert (code, reply[:6]) == (538, b"5.7.11")
        code, reply = smtp.mail(SENDER)
        assert (code, reply[:5]) == (530, b"5.7.0")  # authentication required
    with connect(port, tls=True) as smtp:
        assert smtp.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
        assert int(smtp.esmtp_features["size"]) == MAX_SIZE
        code, reply = smtp.docmd(
            "AUTH", "PLAIN " + plain("SubmissionIngressPoint", "wrong-password")
        )
        assert (code, reply[:5]) == (535, b"5.7.8")
        code, _ = smtp.docmd("AUTH", "PLAIN " + plain("IngressPoint", PASSWORD))
        assert code == 535  # the user name is this ingress point's id
        code, _ = smtp.docmd("AUTH", "PLAIN " + plain("SubmissionIngressPoint", PASSWORD))
        assert code == 235
        refused = smtp.sendmail(
            SENDER, ["carol@nutrition.co"], message("carol@nutrition.co", "submitted")
        )
        assert refused == {}
    stored = wait_for(lambda: list(gateway.mailbox("m365", "carol@nutrition.co").glob("*")))
    assert b"Subject: submitted" in stored[0].read_bytes()
    ingress = [
        json.loads(x) for x in (gateway.home / "logs" / "ingress.jsonl").read_text().splitlines()
    ]
    record = next(r for r in ingress if r["recipients"] == ["carol@nutrition.co"])
    assert (record["ingress_point_id"], record["authenticated"]) == ("SubmissionIngressPoint", True)


def test_auth_login_with_smtplib(gateway):
    with connect(gateway.ports["smtp_auth"], tls=True) as smtp:
        smtp.user, smtp.password = "SubmissionIngressPoint", PASSWORD
        code, _ = smtp.auth("LOGIN", smtp.auth_login)
        assert code == 235
        # the AUTH ingress point has the same traffic policy
        assert smtp.mail(SENDER)[0] == 250
        assert smtp.rcpt("someone@elsewhere.example")[0] == 550


def swaks(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("swaks")
    if binary is None:
        pytest.fail("swaks is missing: `make test` installs it (Debian package swaks)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def test_swaks_auth_plain_and_login(gateway):
    port = str(gateway.ports["smtp_auth"])
    for mechanism in ("PLAIN", "LOGIN"):
        result = swaks(
            "--server", f"127.0.0.1:{port}", "--tls",
            "--auth", mechanism, "--auth-user", "SubmissionIngressPoint", "--auth-password", PASSWORD,
            "--from", SENDER, "--to", "dave@nutrition.co",
            "--header", f"Subject: swaks {mechanism}",
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "235 2.7.0 Authentication successful" in result.stdout
    bad = swaks(
        "--server", f"127.0.0.1:{port}", "--tls",
        "--auth", "PLAIN", "--auth-user", "SubmissionIngressPoint", "--auth-password", "nope-nope",
        "--from", SENDER, "--to", "dave@nutrition.co",
    )  # fmt: skip
    assert bad.returncode != 0
    assert "535 5.7.8" in bad.stdout


def test_swaks_sees_the_traffic_policy_refusal(gateway):
    result = swaks(
        "--server", f"127.0.0.1:{gateway.smtp_port}", "--tls",
        "--from", SENDER, "--to", "locked@nutrition.co",
    )  # fmt: skip
    assert result.returncode != 0
    assert "550 5.7.1 Recipient refused by policy (PolicyStatements[1] (DENY))" in result.stdout


def test_swaks_without_starttls_on_a_tls_required_ingress_point(gateway_factory):
    default = gateway_factory()  # the repository's template: TlsPolicy REQUIRED
    result = swaks(
        "--server", f"127.0.0.1:{default.smtp_port}", "--from", SENDER, "--to", "alice@nutrition.co"
    )
    assert result.returncode != 0
    assert "530 5.7.0 Must issue a STARTTLS command first" in result.stdout


def test_bounce_rule_sends_a_dsn_to_the_envelope_sender(gateway):
    with connect(gateway.smtp_port, tls=True) as smtp:
        smtp.sendmail(
            SENDER, ["bounce@nutrition.co"], message("bounce@nutrition.co", "please bounce")
        )
    stored = wait_for(lambda: list(gateway.mailbox("internet", SENDER).glob("*")))
    dsn = message_from_bytes(stored[0].read_bytes(), policy=policy.default)
    assert dsn["Return-Path"] == "<>"
    assert dsn.get_content_type() == "multipart/report"
    status = list(dsn.iter_parts())[1]
    fields = [dict(block) for block in status.get_payload()]
    assert fields[1]["Final-Recipient"] == "rfc822; bounce@nutrition.co"
    assert fields[1]["Diagnostic-Code"] == "smtp; 550 5.1.1 Mailbox does not exist"
    rule_log = [
        json.loads(x) for x in (gateway.home / "logs" / "rule-set.jsonl").read_text().splitlines()
    ]
    record = next(r for r in rule_log if r["action_name"] == "Bounce")
    assert (record["rule_name"], record["rule_index"], record["action_status"]) == (
        "bounce",
        0,
        "SUCCESS",
    )
    assert record["recipients_matched"] == ["bounce@nutrition.co"]


def test_a_null_sender_gets_no_dsn(gateway):
    with connect(gateway.smtp_port, tls=True) as smtp:
        smtp.sendmail(
            "", ["bounce@nutrition.co"], message("bounce@nutrition.co", "from a null sender")
        )

    def bounce_records() -> list[dict[str, Any]]:
        path = gateway.home / "logs" / "rule-set.jsonl"
        records = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        return [
            r for r in records if r["action_name"] == "Bounce" and "null" in r.get("detail", "")
        ]

    (record,) = wait_for(bounce_records)
    assert record["detail"] == "no DSN: the envelope sender is null (RFC 5321 6.2)"
    ingress = [
        json.loads(x) for x in (gateway.home / "logs" / "ingress.jsonl").read_text().splitlines()
    ]
    assert ingress[-1]["mail_from"] == ""  # MAIL FROM:<> is the null sender, not "<>"
