"""The template deployed for another domain by parameters alone, as `sam deploy --guided`
would be answered, with no file edited: the stack on moto, the state machine in moto's
interpreter with the real handlers, routes its users."""

from __future__ import annotations

import json

import boto3
from moto import mock_aws

from mxgate.sandbox.stack import MOTO_CONFIG, REGION, run_execution, sent_messages
from tests.awsstack import create_stack

ACME = {
    "EmployeeDomain": "acme.com",
    "AppDomain": "apps.acme.com",
    "M365Tenant": "acme-com",
    "M365Employees": "carol@acme.com",
}
RAW = (
    b"From: Buyer <buyer@shop.example>\r\nTo: bob@acme.com, carol@acme.com\r\n"
    b"Subject: order 12\r\nMessage-ID: <o12@shop.example>\r\n\r\nTwo pallets.\r\n"
)


def test_the_template_deployed_for_acme_by_parameters_routes_its_users():
    with mock_aws(config=MOTO_CONFIG):
        stack = create_stack(parameters=ACME)
        try:
            bucket = stack.resource("RawMailBucket")
            key = "raw/01ACMEORDER0000000000000001"
            envelope = {
                "message_id": "01ACMEORDER0000000000000001",
                "mail_from": "buyer@shop.example",
                "recipients": ["bob@acme.com", "carol@acme.com", "orders@apps.acme.com"],
            }
            boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key=key, Body=RAW)
            machine = stack.deploy_state_machine()
            described = run_execution(
                machine, {"stored": {"bucket": bucket, "key": key, "envelope": envelope}}, "acme"
            )
            assert described["status"] == "SUCCEEDED"
            rows = boto3.client("dynamodb", region_name=REGION).scan(
                TableName=stack.resource("StateTable")
            )["Items"]
            states = {
                r["recipient"]["S"]: (r["outcome"]["S"], r["route"]["S"])
                for r in rows
                if r["sk"]["S"].startswith("rcpt#")
            }
            assert states == {
                "bob@acme.com": ("relayed", "workspace"),  # the directory default
                "carol@acme.com": ("relayed", "m365"),  # M365Employees
                "orders@apps.acme.com": ("handed_to_app", "orders"),
            }
            routing = (".test-google-a.com", ".mail.onmicrosoft.com")  # moto adds header To too
            routed = {d for m in sent_messages() for d in m.destinations if d.endswith(routing)}
            assert routed == {
                "bob@acme.com.test-google-a.com",  # the derived Workspace routing domain
                "carol@acmecom.mail.onmicrosoft.com",  # and the Microsoft 365 one
            }
            identity = json.loads(json.dumps(stack.properties("EmployeeIdentity")))
            assert identity["EmailIdentity"] == "acme.com"
        finally:
            stack.close()
