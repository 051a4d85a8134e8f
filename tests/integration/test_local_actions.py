"""Every rule action performed on this machine by the local Mail Manager, with real SMTP
mailbox hosts on loopback, the file object store and the SQLite timeline; and the terminal
state each one gives a recipient."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from mxgate.adapters.local.maildir import WorkMailFolders
from mxgate.adapters.local.objects import FileObjectStore
from mxgate.adapters.local.state import SqliteState
from mxgate.adapters.local.topics import TopicFiles
from mxgate.clock import SystemClock
from mxgate.delivery.smtp import SmtpTarget, SmtpTransport
from mxgate.errors import TransientError
from mxgate.local.lambdas import LocalLambdas
from mxgate.local.logs import VendedLogs
from mxgate.local.pipeline import through_the_pipeline
from mxgate.local.rule_set import LocalMailManager
from mxgate.local.rule_set_failures import RuleSetFailures
from mxgate.mailmanager.actions import ActionPorts
from mxgate.mailmanager.addresses import StaticAddressBook
from mxgate.mailmanager.resources import load_mail_manager
from mxgate.message.raw import RawMessage
from mxgate.records import Envelope, RuleSetRetry
from mxgate.routing.routes import DeliveryPolicy
from tests.templates import recipient_is

SENDER = "buyer@shop.example"
RAW = (
    b"From: Buyer <buyer@shop.example>\r\nTo: team@nutrition.co\r\nSubject: Order 7\r\n"
    b"Message-ID: <order-7@shop.example>\r\n\r\nTwo boxes, please.\r\n"
)
HANDLER = """
import json
from pathlib import Path

def handler(event, context):
    record = event["Records"][0]["ses"]
    with open(Path(__file__).parent / "events.jsonl", "a") as out:
        out.write(json.dumps({"event": event, "function": context.function_name}) + "\\n")
    if "lambda-fail@nutrition.co" in record["receipt"]["recipients"]:
        raise RuntimeError("the function failed")
    return {"disposition": "CONTINUE"}
"""


def rule(name: str, recipients: list[str], *actions: dict[str, Any]) -> dict[str, Any]:
    return {"Name": name, "Conditions": [recipient_is(*recipients)], "Actions": list(actions)}


def template(directory: Path, loopback_port: int) -> Path:
    role = {"Fn::GetAtt": ["Role", "Arn"]}
    rules = [
        rule(
            "relay",
            ["relay@nutrition.co"],
            {"Relay": {"Relay": {"Ref": "Mapped"}, "MailFrom": "PRESERVE"}},
        ),
        rule(
            "replace",
            ["replace@nutrition.co"],
            {"Relay": {"Relay": {"Ref": "Mapped"}, "MailFrom": "REPLACE"}},
        ),
        rule("loopback", ["loopback@nutrition.co"], {"Relay": {"Relay": {"Ref": "Loopback"}}}),
        rule("far", ["far@nutrition.co"], {"Relay": {"Relay": {"Ref": "Far"}}}),
        rule("send", ["send@nutrition.co"], {"Send": {"RoleArn": role}}),
        rule(
            "bounce",
            ["bounce@nutrition.co", "gone@nutrition.co"],
            {
                "Bounce": {
                    "RoleArn": role,
                    "Sender": "postmaster@nutrition.co",
                    "StatusCode": "5.1.1",
                    "SmtpReplyCode": "550",
                    "DiagnosticMessage": "No such user here",
                }
            },
        ),
        rule(
            "sns-content",
            ["sns@nutrition.co"],
            {"PublishToSns": {"TopicArn": {"Ref": "Topic"}, "RoleArn": role, "Encoding": "BASE64"}},
        ),
        rule(
            "sns-headers",
            ["sns-headers@nutrition.co"],
            {
                "PublishToSns": {
                    "TopicArn": {"Ref": "Topic"},
                    "RoleArn": role,
                    "PayloadType": "HEADERS",
                }
            },
        ),
        rule(
            "lambda",
            ["lambda@nutrition.co", "lambda-fail@nutrition.co"],
            {
                "InvokeLambda": {
                    "FunctionArn": {"Fn::GetAtt": ["Intake", "Arn"]},
                    "InvocationType": "REQUEST_RESPONSE",
                    "RoleArn": role,
                    "ActionFailurePolicy": "DROP",
                }
            },
        ),
        rule(
            "lambda-event",
            ["lambda-event@nutrition.co"],
            {
                "AddHeader": {"HeaderName": "X-Fail", "HeaderValue": "yes"},
            },
            {
                "InvokeLambda": {
                    "FunctionArn": {"Fn::GetAtt": ["Intake", "Arn"]},
                    "InvocationType": "EVENT",
                    "RoleArn": role,
                }
            },
        ),
        rule(
            "mailbox",
            ["mailbox@nutrition.co"],
            {
                "DeliverToMailbox": {
                    "MailboxArn": "arn:aws:workmail:us-east-1:000000000000:organization/m-123",
                    "RoleArn": role,
                }
            },
        ),
        rule(
            "qbusiness",
            ["q@nutrition.co", "q-continue@nutrition.co"],
            {
                "AddHeader": {"HeaderName": "X-Indexed", "HeaderValue": "no"},
            },
        ),
        rule(
            "q-drop",
            ["q@nutrition.co"],
            {
                "DeliverToQBusiness": {
                    "ApplicationId": "a" * 36,
                    "IndexId": "b" * 36,
                    "RoleArn": role,
                    "ActionFailurePolicy": "DROP",
                }
            },
            {"Archive": {"TargetArchive": {"Ref": "Archive"}}},
        ),
        rule(
            "q-continue",
            ["q-continue@nutrition.co"],
            {
                "DeliverToQBusiness": {
                    "ApplicationId": "a" * 36,
                    "IndexId": "b" * 36,
                    "RoleArn": role,
                }
            },
            {"Archive": {"TargetArchive": {"Ref": "Archive"}}},
        ),
        rule(
            "store",
            ["s3@nutrition.co", "s3-then-drop@nutrition.co"],
            {"WriteToS3": {"S3Bucket": "raw-mail", "S3Prefix": "in/", "RoleArn": role}},
        ),
        rule("late-drop", ["s3-then-drop@nutrition.co", "dropped@nutrition.co"], {"Drop": {}}),
        rule(  # as the shipped rule set hands mail to the pipeline: the object, then its envelope
            "pipeline",
            ["pipeline@nutrition.co"],
            {"WriteToS3": {"S3Bucket": "raw-mail", "S3Prefix": "raw/", "RoleArn": role}},
            {
                "InvokeLambda": {
                    "FunctionArn": {"Fn::GetAtt": ["Start", "Arn"]},
                    "InvocationType": "EVENT",
                    "RoleArn": role,
                }
            },
        ),
        rule(
            "rewrite",
            ["alias@nutrition.co"],
            {"ReplaceRecipient": {"ReplaceWith": ["relay@nutrition.co"]}},
            {"Relay": {"Relay": {"Ref": "Mapped"}}},
        ),
        rule(
            "pair",
            ["pair@nutrition.co"],
            {"ReplaceRecipient": {"ReplaceWith": ["pair-a@nutrition.co", "pair-b@nutrition.co"]}},
            {"Relay": {"Relay": {"Ref": "Mapped"}}},
        ),
        rule(  # an AddHeader between the two: the objects hold different bytes
            "tagged",
            ["tagged@nutrition.co"],
            {"Archive": {"TargetArchive": {"Ref": "Archive"}}},
            {"AddHeader": {"HeaderName": "X-Tagged", "HeaderValue": "yes"}},
            {"WriteToS3": {"S3Bucket": "raw-mail", "S3Prefix": "tagged/", "RoleArn": role}},
            {"WriteToS3": {"S3Bucket": "raw-mail", "S3Prefix": "again/", "RoleArn": role}},
        ),
    ]
    relay = {"Type": "AWS::SES::MailManagerRelay"}
    document = {
        "Resources": {
            "Role": {"Type": "AWS::IAM::Role", "Properties": {}},
            "Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": "inbound-mail"}},
            "Intake": {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "CodeUri": "intake/",
                    "Handler": "app.handler",
                    "Runtime": "python3.13",
                },
            },
            "Start": {  # functions/start/: an InvokeLambda to it hands the envelope on
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "CodeUri": "start/",
                    "Handler": "app.handler",
                    "Runtime": "python3.13",
                },
            },
            "Point": {
                "Type": "AWS::SES::MailManagerIngressPoint",
                "Properties": {
                    "Type": "OPEN",
                    "RuleSetId": {"Ref": "Rules"},
                    "TrafficPolicyId": {"Ref": "Policy"},
                },
            },
            "Policy": {
                "Type": "AWS::SES::MailManagerTrafficPolicy",
                "Properties": {"DefaultAction": "ALLOW", "PolicyStatements": []},
            },
            "Rules": {"Type": "AWS::SES::MailManagerRuleSet", "Properties": {"Rules": rules}},
            "Mapped": {
                **relay,
                "Properties": {
                    "ServerName": "aspmx.l.google.com",
                    "ServerPort": 25,
                    "Authentication": {"NoAuthentication": {}},
                },
            },
            "Loopback": {
                **relay,
                "Properties": {
                    "ServerName": "127.0.0.1",
                    "ServerPort": loopback_port,
                    "Authentication": {"NoAuthentication": {}},
                },
            },
            "Far": {
                **relay,
                "Properties": {
                    "ServerName": "mx.far.example",
                    "ServerPort": 25,
                    "Authentication": {"NoAuthentication": {}},
                },
            },
            "Archive": {"Type": "AWS::SES::MailManagerArchive", "Properties": {}},
        }
    }
    (directory / "intake").mkdir(parents=True)
    (directory / "intake" / "app.py").write_text(HANDLER)
    (directory / "start").mkdir()
    (directory / "start" / "app.py").write_text("def handler(event, context):\n    return None\n")
    path = directory / "template.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


class Harness:
    def __init__(self, home: Path, mailbox_host: Any) -> None:
        self.home = home
        ports = {name: mailbox_host(name) for name in ("workspace", "loopback", "internet")}
        self.config = load_mail_manager(template(home / "template", ports["loopback"]))
        self.state = SqliteState(home / "state.db")
        self.objects = FileObjectStore(home / "objects")
        self.started: list[tuple[str, str]] = []
        self.envelopes: list[Envelope] = []  # what each start was given

        self.transports: list[SmtpTransport] = []

        def transport(port: int) -> SmtpTransport:
            self.transports.append(
                SmtpTransport(SmtpTarget("127.0.0.1", port, helo="mxgate.test", timeout=10))
            )
            return self.transports[-1]

        loopback = self.config.relays["Loopback"]
        clock = SystemClock()
        self.service = LocalMailManager(
            resources=self.config,
            rule_sets={"Point": self.config.rule_sets["Rules"]},
            book=StaticAddressBook(),
            actions=ActionPorts(
                objects=self.objects,
                idempotency=self.state,
                clock=clock,
                relays={
                    "Mapped": transport(ports["workspace"]),
                    "Loopback": transport(loopback.ServerPort),
                },
                outbound=transport(ports["internet"]),
                functions=LocalLambdas(self.config),
                topics=TopicFiles(home / "sns", clock),
                mailboxes=WorkMailFolders(home / "workmail"),
                hostname="mxgate.test",
                replace_mail_from="postmaster@nutrition.co",
            ),
            failures=RuleSetFailures(
                objects=self.objects,
                timeline=self.state,
                dead_letters=self.state,
                deferrals=self.state,
                retry_policy=DeliveryPolicy(),
                clock=clock,
            ),
            logs=VendedLogs(home / "logs"),
            locks=home / "locks",
        )
        # what the pipeline needs of a worker: the rule set, and a workflow that records starts
        self.worker = SimpleNamespace(
            mail_manager=self.service,
            state=self.state,  # its writes grouped per run (group commit)
            workflow=SimpleNamespace(start=self._started),
        )
        self.count = 0

    def _started(self, bucket: str, key: str, envelope: Envelope) -> None:
        self.started.append((bucket, key))
        self.envelopes.append(envelope)

    def run(self, envelope: Envelope, raw: bytes, **how: Any) -> RuleSetRetry | None:
        """The rule set over one message, its stored objects to the workflow, a retry for
        what is left open: what a worker does with a spooled message."""
        return through_the_pipeline(self.worker, envelope, RawMessage.of(raw), **how)

    def send(
        self, *recipients: str, sender: str = SENDER, raw: bytes = RAW
    ) -> tuple[str, dict[str, Any]]:
        self.count += 1
        envelope = Envelope(
            message_id=f"01TESTMESSAGE{self.count:012d}",
            mail_from=sender,
            recipients=list(recipients),
            helo="mta.shop.example",
            source_ip="198.51.100.7",
            tls_protocol="TLS1_3",
            received_at=datetime.now(UTC),
            ingress_point="Point",
        )
        self.run(envelope, raw, spool_file=f"{envelope.message_id}.msg")
        states = {s.recipient: s for s in self.state.states(envelope.message_id)}
        return envelope.message_id, states

    def maildir(self, host: str, recipient: str) -> list[bytes]:
        directory = self.home / "mailboxes" / host / recipient / "new"
        return [p.read_bytes() for p in sorted(directory.glob("*"))] if directory.is_dir() else []

    def rule_set_log(self) -> list[dict[str, Any]]:
        lines = (self.home / "logs" / "rule-set.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    def close(self) -> None:
        for transport in self.transports:
            transport.close()
        self.state.close()


@pytest.fixture
def harness(tmp_path: Path, mailbox_host: Any) -> Iterator[Harness]:
    started = Harness(tmp_path, mailbox_host)
    yield started
    started.close()


def outcome(states: dict[str, Any], recipient: str) -> tuple[str, str]:
    return states[recipient].outcome.value, states[recipient].detail


def test_relay_preserves_the_envelope_sender(harness):
    _, states = harness.send("relay@nutrition.co")
    assert outcome(states, "relay@nutrition.co") == ("delivered", "rule action Relay")
    (stored,) = harness.maildir("workspace", "relay@nutrition.co")
    assert stored.startswith(b"Return-Path: <buyer@shop.example>\r\n")
    assert stored.endswith(RAW)  # the bytes received, untouched


def test_relay_replace_uses_the_configured_sender(harness):
    harness.send("replace@nutrition.co")
    (stored,) = harness.maildir("workspace", "replace@nutrition.co")
    assert stored.startswith(b"Return-Path: <postmaster@nutrition.co>\r\n")


def test_relay_to_a_loopback_server_name_and_port(harness):
    _, states = harness.send("loopback@nutrition.co")
    assert states["loopback@nutrition.co"].outcome.value == "delivered"
    assert len(harness.maildir("loopback", "loopback@nutrition.co")) == 1


def test_relay_to_a_host_not_on_this_machine_fails_clearly(harness):
    _, states = harness.send("far@nutrition.co")
    record = harness.rule_set_log()[-1]
    assert (record["action_name"], record["action_status"]) == ("Relay", "FAILURE")
    assert "mx.far.example:25, which is not on this machine" in record["action_failure"]
    # CONTINUE (the default), a configuration problem: dead-lettered, never dropped
    state, detail = outcome(states, "far@nutrition.co")
    assert state == "dead_lettered"
    assert "rule far: Relay: relay Far points at mx.far.example:25" in detail


def test_send_goes_to_the_outbound_host(harness):
    _, states = harness.send("send@nutrition.co")
    assert states["send@nutrition.co"].outcome.value == "delivered"
    (stored,) = harness.maildir("internet", "send@nutrition.co")
    assert stored.endswith(RAW)


def test_bounce_sends_one_rfc3464_dsn_to_the_envelope_sender(harness):
    _, states = harness.send("bounce@nutrition.co", "gone@nutrition.co")
    assert {r: s.outcome.value for r, s in states.items()} == {
        "bounce@nutrition.co": "bounced",
        "gone@nutrition.co": "bounced",
    }
    (stored,) = harness.maildir("internet", SENDER)
    assert stored.startswith(b"Return-Path: <>\r\n")  # a DSN has a null envelope sender
    dsn = message_from_bytes(stored, policy=policy.default)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["From"] == "postmaster@nutrition.co"
    assert dsn["Auto-Submitted"] == "auto-replied"
    human, status, headers = dsn.iter_parts()
    assert "550 5.1.1 No such user here" in human.get_content()
    fields = [dict(block) for block in status.get_payload()]
    assert fields[0]["Reporting-MTA"] == "dns; mxgate.test"
    assert [(f["Final-Recipient"], f["Action"], f["Status"]) for f in fields[1:]] == [
        ("rfc822; bounce@nutrition.co", "failed", "5.1.1"),
        ("rfc822; gone@nutrition.co", "failed", "5.1.1"),
    ]
    assert fields[1]["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user here"
    assert headers.get_content_type() == "text/rfc822-headers"
    assert "Subject: Order 7" in headers.get_content()


def test_bounce_never_answers_a_null_sender(harness):
    _, states = harness.send("bounce@nutrition.co", sender="")
    assert states["bounce@nutrition.co"].outcome.value == "bounced"
    assert "null" in harness.rule_set_log()[-1]["detail"]
    assert list((harness.home / "mailboxes" / "internet").glob("*/new/*")) == []


def sns_records(harness: Harness) -> list[dict[str, Any]]:
    path = harness.home / "sns" / "inbound-mail.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_publish_to_sns_content_base64(harness):
    message_id, states = harness.send("sns@nutrition.co")
    assert states["sns@nutrition.co"].outcome.value == "handed_to_app"
    (record,) = sns_records(harness)
    assert record["Type"] == "Notification"
    assert record["TopicArn"] == "arn:aws:sns:us-east-1:000000000000:inbound-mail"
    notification = json.loads(record["Message"])
    assert notification["notificationType"] == "Received"
    assert notification["mail"]["messageId"] == message_id
    assert notification["mail"]["source"] == SENDER
    assert notification["mail"]["commonHeaders"]["subject"] == "Order 7"
    assert notification["receipt"]["recipients"] == ["sns@nutrition.co"]
    assert notification["receipt"]["action"]["encoding"] == "BASE64"
    assert base64.b64decode(notification["content"]) == RAW


def test_publish_to_sns_headers_only(harness):
    harness.send("sns-headers@nutrition.co")
    (record,) = sns_records(harness)
    notification = json.loads(record["Message"])
    assert "content" not in notification
    names = [h["name"] for h in notification["mail"]["headers"]]
    assert names == ["From", "To", "Subject", "Message-ID"]


def test_publish_to_sns_refuses_what_sns_would_refuse(harness):
    big = RAW + b"x" * (300 * 1024) + b"\r\n"
    _, states = harness.send("sns@nutrition.co", raw=big)
    record = harness.rule_set_log()[-1]
    assert record["action_status"] == "FAILURE"
    assert "over SNS's" in record["action_failure"]
    assert states["sns@nutrition.co"].outcome.value == "dead_lettered"


def lambda_calls(harness: Harness) -> list[dict[str, Any]]:
    path = harness.home / "template" / "intake" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_invoke_lambda_request_response_with_the_classic_ses_event(harness):
    message_id, states = harness.send("lambda@nutrition.co")
    assert states["lambda@nutrition.co"].outcome.value == "handed_to_app"
    (call,) = lambda_calls(harness)
    assert call["function"] == "Intake"
    (record,) = call["event"]["Records"]
    assert (record["eventSource"], record["eventVersion"]) == ("aws:ses", "1.0")
    mail, receipt = record["ses"]["mail"], record["ses"]["receipt"]
    assert mail["messageId"] == message_id
    assert mail["destination"] == ["lambda@nutrition.co"]
    assert {"name": "Subject", "value": "Order 7"} in mail["headers"]
    assert mail["headersTruncated"] is False
    assert receipt["recipients"] == ["lambda@nutrition.co"]
    assert receipt["spfVerdict"] == {"status": "PROCESSING_FAILED"}
    assert receipt["action"] == {
        "type": "Lambda",
        "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:Intake",
        "invocationType": "RequestResponse",
    }
    assert 'returned {"disposition": "CONTINUE"}' in harness.rule_set_log()[-1]["detail"]


def test_invoke_lambda_failure_with_drop_policy(harness):
    _, states = harness.send("lambda-fail@nutrition.co")
    record = harness.rule_set_log()[-1]
    assert (record["action_status"], record["action_failure"]) == (
        "FAILURE",
        "InvokeLambda: the handler raised RuntimeError: the function failed",
    )
    assert states["lambda-fail@nutrition.co"].outcome.value == "dropped"
    assert "ActionFailurePolicy DROP" in states["lambda-fail@nutrition.co"].detail


def test_invoke_lambda_event_does_not_wait_for_the_handler_result(harness):
    _, states = harness.send("lambda-event@nutrition.co")
    assert states["lambda-event@nutrition.co"].outcome.value == "handed_to_app"
    (call,) = lambda_calls(harness)
    assert call["event"]["Records"][0]["ses"]["receipt"]["action"]["invocationType"] == "Event"


def test_deliver_to_mailbox_writes_a_local_maildir(harness):
    _, states = harness.send("mailbox@nutrition.co")
    assert states["mailbox@nutrition.co"].outcome.value == "delivered"
    (stored,) = (harness.home / "workmail" / "m-123" / "mailbox@nutrition.co" / "new").iterdir()
    assert stored.read_bytes().endswith(RAW)


def test_deliver_to_qbusiness_is_a_failure_and_the_failure_policy_decides(harness):
    _, states = harness.send("q@nutrition.co", "q-continue@nutrition.co")
    records = [
        r for r in harness.rule_set_log() if r["action_name"] in ("DeliverToQBusiness", "Archive")
    ]
    assert [(r["rule_name"], r["action_name"], r["action_status"]) for r in records] == [
        ("q-drop", "DeliverToQBusiness", "FAILURE"),
        ("q-continue", "DeliverToQBusiness", "FAILURE"),
        ("q-continue", "Archive", "SUCCESS"),  # CONTINUE: the next action still ran
    ]
    assert "not available on this machine" in records[0]["action_failure"]
    assert states["q@nutrition.co"].outcome.value == "dropped"
    assert "ActionFailurePolicy DROP" in states["q@nutrition.co"].detail
    # CONTINUE: the Archive still ran, but nothing delivered it and an action failed
    assert states["q-continue@nutrition.co"].outcome.value == "dead_lettered"
    assert "DeliverToQBusiness: Amazon Q Business is not available" in (
        states["q-continue@nutrition.co"].detail
    )
    archived = list((harness.home / "objects" / "mxgate-archive").rglob("*.eml"))
    assert len(archived) == 1
    assert archived[0].read_bytes().startswith(b"X-Indexed: no\r\n")  # AddHeader, prepended


def test_write_to_s3_keeps_the_prefix_and_starts_the_workflow(harness):
    message_id, states = harness.send(
        "s3@nutrition.co", "s3-then-drop@nutrition.co", "dropped@nutrition.co"
    )
    assert harness.started == [("raw-mail", f"in/{message_id}")]
    assert harness.objects.get("raw-mail", f"in/{message_id}") == RAW
    # the workflow gets the envelope of the object's recipients (no file beside the object)
    assert [e.recipients for e in harness.envelopes] == [
        ["s3@nutrition.co", "s3-then-drop@nutrition.co"]
    ]
    assert harness.envelopes[0].message_id == message_id
    assert not harness.objects.exists("raw-mail", f"envelopes/in/{message_id}.json")
    # what was written goes on to the workflow, even if a later rule dropped it
    assert set(states) == {"dropped@nutrition.co"}
    assert outcome(states, "dropped@nutrition.co") == ("dropped", "rule late-drop: Drop")


def test_objects_of_the_same_bytes_share_their_file_and_others_do_not(harness):
    """Archive before an AddHeader, two WriteToS3 after it: the archived copy is the message
    as received, written on its own; the second WriteToS3 is a hard link to the first."""
    message_id, _ = harness.send("tagged@nutrition.co")
    (archived,) = (harness.home / "objects" / "mxgate-archive").rglob("*.eml")
    tagged = harness.home / "objects" / "raw-mail" / "tagged" / message_id
    again = harness.home / "objects" / "raw-mail" / "again" / message_id
    assert archived.read_bytes() == RAW
    assert tagged.read_bytes() == b"X-Tagged: yes\r\n" + RAW
    assert archived.stat().st_ino != tagged.stat().st_ino
    assert (tagged.stat().st_ino, tagged.stat().st_nlink) == (again.stat().st_ino, 2)


def test_an_envelope_handed_on_whose_remembering_failed_is_no_internal_error(harness, monkeypatch):
    """The state database full just after the Start function took the envelope: the
    InvokeLambda is recorded FAILURE, saying it was done but not remembered, and hands no
    envelope on; the message still goes on to the workflow once, with its stored object (once
    a KeyError quarantined such a message)."""
    remember = harness.state.remember

    def full_for_the_invocation(key: str, value: str) -> None:
        if ".InvokeLambda:" in key:
            raise TransientError("state database full: database or disk is full")
        remember(key, value)

    monkeypatch.setattr(harness.state, "remember", full_for_the_invocation)
    message_id, states = harness.send("pipeline@nutrition.co")
    assert harness.started == [("raw-mail", f"raw/{message_id}")]  # the workflow decides
    assert states == {}  # no terminal state from the rule set, no quarantine
    (invocation,) = [r for r in harness.rule_set_log() if r["action_name"] == "InvokeLambda"]
    assert invocation["action_status"] == "FAILURE"
    assert invocation["action_failure"].startswith("InvokeLambda: done, but not remembered (")


def test_replaced_recipients_get_their_own_outcomes(harness):
    _, states = harness.send("alias@nutrition.co")
    assert states["alias@nutrition.co"].outcome.value == "dropped"
    assert (
        "replaced with ['relay@nutrition.co'] by rule rewrite"
        in states["alias@nutrition.co"].detail
    )
    assert states["relay@nutrition.co"].outcome.value == "delivered"
    assert len(harness.maildir("workspace", "relay@nutrition.co")) == 1


def test_one_rule_set_log_record_per_message_per_action(harness):
    message_id, _ = harness.send("relay@nutrition.co", "send@nutrition.co")
    records = [r for r in harness.rule_set_log() if r["message_id"] == message_id]
    assert [
        (r["rule_name"], r["rule_index"], r["action_name"], r["recipients_matched"])
        for r in records
    ] == [
        ("relay", 0, "Relay", ["relay@nutrition.co"]),
        ("send", 4, "Send", ["send@nutrition.co"]),
    ]
    for record in records:
        assert record["action_status"] == "SUCCESS"
        assert record["action_failure"] == ""
        assert record["ingress_point_id"] == "Point"
        assert record["rule_set_id"] == "Rules"


def test_a_retry_repeats_only_what_failed(harness):
    """A list address replaced by two members; one member's mailbox is full for now (452). The
    other is delivered at once; the retry runs the accepted address through the rule set again,
    which relays to the refused member only."""
    control = harness.home / "mailboxes" / "workspace" / ".reply-pair-b@nutrition.co"
    control.write_text("452 4.2.2 mailbox full")
    message_id, states = harness.send("pair@nutrition.co")
    assert {r: s.outcome.value for r, s in states.items()} == {
        "pair@nutrition.co": "dropped",  # replaced
        "pair-a@nutrition.co": "delivered",
    }
    relays = [r for r in harness.rule_set_log() if r["action_name"] == "Relay"]
    assert [(r["action_status"], r["recipients_matched"]) for r in relays] == [
        ("SUCCESS", ["pair-a@nutrition.co"]),
        ("FAILURE", ["pair-b@nutrition.co"]),
    ]
    (retry,) = harness.state.lease_due(datetime.now(UTC) + timedelta(days=1), 60)
    assert isinstance(retry, RuleSetRetry)
    assert retry.record_id == f"{message_id}#rules"
    assert (retry.envelope.recipients, retry.recipients) == (
        ["pair@nutrition.co"],
        ["pair-b@nutrition.co"],
    )

    control.unlink()
    assert harness.run(retry.envelope, RAW, retry=retry) is None
    states = {s.recipient: s.outcome.value for s in harness.state.states(message_id)}
    assert states["pair-b@nutrition.co"] == "delivered"
    assert len(harness.maildir("workspace", "pair-a@nutrition.co")) == 1  # not relayed again
    assert len(harness.maildir("workspace", "pair-b@nutrition.co")) == 1
    (again,) = [r for r in harness.rule_set_log() if r["action_name"] == "Relay"][2:]
    assert again["recipients_matched"] == ["pair-a@nutrition.co", "pair-b@nutrition.co"]
    assert again["detail"].endswith("(already done for 1 recipient(s))")
