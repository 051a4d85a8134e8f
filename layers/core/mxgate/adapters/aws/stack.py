"""What `mxgate check --aws` and `mxgate rules replay --aws` read from the deployed stack,
with the operator's clients (adapters/aws/operator.py): its outputs and parameters
(CloudFormation), the domain's SES identity (SESv2), the ingress point (Mail Manager), a
test message in the raw bucket and its recipients' terminal states in the state table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mxgate.adapters.aws.dynamodb import DynamoState
from mxgate.adapters.aws.failures import transient_failures
from mxgate.adapters.aws.operator import OperatorAws, stack_outputs
from mxgate.clock import SystemClock
from mxgate.errors import MxgateError
from mxgate.records import RecipientState, message_id_of

MAX_OBJECTS_READ = 50  # stored messages looked into for a test message's token

AwsError = (ClientError, BotoCoreError, MxgateError)


def failure(error: Exception) -> str:
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        return f"{details.get('Code', 'Error')}: {details.get('Message', '')}".strip()
    return f"{type(error).__name__}: {error}" if not isinstance(error, MxgateError) else str(error)


@dataclass
class DeployedStack:
    operator: OperatorAws

    @property
    def name(self) -> str:
        return self.operator.names.stack or "(no stack)"

    def outputs(self) -> dict[str, str]:
        if self.operator.names.stack is None:
            return {}
        return stack_outputs(self.operator.session, self.operator.names.stack)

    def parameters(self) -> dict[str, str]:
        """The values the stack was deployed with (none without --stack)."""
        if self.operator.names.stack is None:
            return {}
        client = self.operator.client("cloudformation")
        with transient_failures(f"CloudFormation DescribeStacks {self.name}"):
            stack = client.describe_stacks(StackName=self.name)["Stacks"][0]
        return {
            p["ParameterKey"]: p.get("ResolvedValue", p.get("ParameterValue", ""))
            for p in stack.get("Parameters", [])
        }

    def email_identity(self, domain: str) -> dict[str, Any] | None:
        client = self.operator.client("sesv2")
        try:
            with transient_failures(f"SESv2 GetEmailIdentity {domain}"):
                return dict(client.get_email_identity(EmailIdentity=domain))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "NotFoundException":
                return None
            raise

    def ingress_point(self, ingress_point_id: str) -> dict[str, Any]:
        client = self.operator.client("mailmanager")
        with transient_failures(f"Mail Manager GetIngressPoint {ingress_point_id}"):
            return dict(client.get_ingress_point(IngressPointId=ingress_point_id))

    def find_stored(self, bucket: str, prefix: str, token: bytes, since: datetime) -> str | None:
        """The message id of the stored message holding `token`, written since `since`."""
        s3 = self.operator.client("s3")
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        recent = [
            item
            for page in pages
            for item in page.get("Contents", [])
            if item["LastModified"] >= since
        ]
        recent.sort(key=lambda item: item["LastModified"], reverse=True)
        for item in recent[:MAX_OBJECTS_READ]:
            head = s3.get_object(Bucket=bucket, Key=item["Key"], Range="bytes=0-16383")
            if token in head["Body"].read():
                return message_id_of(item["Key"])
        return None

    def states(self, table: str, message_id: str) -> list[RecipientState]:
        return DynamoState(self.operator.client("dynamodb"), table, SystemClock()).states(
            message_id
        )
