"""What the commands read from a deployed stack: its outputs and parameters (CloudFormation);
for `mxgate check --aws` the domain's SES identity (SESv2), the ingress point (Mail Manager)
and, after `--send-test`, the test message in the raw bucket and its recipients' terminal
states in the state table; for `mxgate rules replay --aws` the raw bucket."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from mxgate.adapters.aws.clients import LazyClient
from mxgate.adapters.aws.dynamodb import DynamoState
from mxgate.clock import SystemClock
from mxgate.timeline import RecipientState
from mxgate.workflow.envelope import message_id_of

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_mailmanager import MailManagerClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sesv2 import SESV2Client

MAX_OBJECTS_READ = 50  # stored messages looked into for a test message's token


def failure(error: Exception) -> str:
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        return f"{details.get('Code', 'Error')}: {details.get('Message', '')}".strip()
    return f"{type(error).__name__}: {error}"


AwsError = (ClientError, BotoCoreError)


@dataclass
class DeployedStack:
    """The AWS clients the commands use; made lazily, with the project's settings."""

    name: str
    cloudformation: CloudFormationClient
    sesv2: SESV2Client
    mailmanager: MailManagerClient
    s3: S3Client
    dynamodb: DynamoDBClient

    @classmethod
    def connect(cls, name: str, region: str | None = None) -> DeployedStack:
        def client(service: str) -> Any:
            return LazyClient(service, region=region)

        return cls(
            name,
            cast("CloudFormationClient", client("cloudformation")),
            cast("SESV2Client", client("sesv2")),
            cast("MailManagerClient", client("mailmanager")),
            cast("S3Client", client("s3")),
            cast("DynamoDBClient", client("dynamodb")),
        )

    def _described(self) -> Any:
        return self.cloudformation.describe_stacks(StackName=self.name)["Stacks"][0]

    def outputs(self) -> dict[str, str]:
        return {
            o["OutputKey"]: o.get("OutputValue", "") for o in self._described().get("Outputs", [])
        }

    def parameters(self) -> dict[str, str]:
        """The values the stack was deployed with."""
        return {
            p["ParameterKey"]: p.get("ResolvedValue", p.get("ParameterValue", ""))
            for p in self._described().get("Parameters", [])
        }

    def email_identity(self, domain: str) -> dict[str, Any] | None:
        try:
            return dict(self.sesv2.get_email_identity(EmailIdentity=domain))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "NotFoundException":
                return None
            raise

    def ingress_point(self, ingress_point_id: str) -> dict[str, Any]:
        return dict(self.mailmanager.get_ingress_point(IngressPointId=ingress_point_id))

    def find_stored(self, bucket: str, prefix: str, token: bytes, since: datetime) -> str | None:
        """The message id of the stored message holding `token`, written since `since`."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        recent = [
            item
            for page in pages
            for item in page.get("Contents", [])
            if item["LastModified"] >= since
        ]
        recent.sort(key=lambda item: item["LastModified"], reverse=True)
        for item in recent[:MAX_OBJECTS_READ]:
            head = self.s3.get_object(Bucket=bucket, Key=item["Key"], Range="bytes=0-16383")
            if token in head["Body"].read():
                return message_id_of(item["Key"])
        return None

    def states(self, table: str, message_id: str) -> list[RecipientState]:
        return DynamoState(self.dynamodb, table, SystemClock()).states(message_id)
