"""The Transport port on SES sending (SESv2 SendEmail with raw content).

The recipients are rewritten to the mailbox host's routing domain (`alice@example.com` ->
`alice@example.com.test-google-a.com`), so SES hands the message to that host and not back
to the domain's MX, which is this gateway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from mxgate.ports import SendResult

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client

_TRANSIENT = {
    "TooManyRequestsException",
    "Throttling",
    "ThrottlingException",
    "LimitExceededException",
    "ServiceUnavailable",
    "InternalFailure",
    "RequestTimeout",
}


def routed(recipient: str, routing_domain: str | None) -> str:
    if not routing_domain:
        return recipient
    local = recipient.rpartition("@")[0]
    return f"{local}@{routing_domain}"


class SesTransport:
    def __init__(self, client: SESV2Client, routing_domain: str | None = None) -> None:
        self.client = client
        self.routing_domain = routing_domain

    def send(
        self, envelope_sender: str, recipients: Sequence[str], raw: bytes
    ) -> Mapping[str, SendResult]:
        destinations = [routed(r, self.routing_domain) for r in recipients]
        try:
            response = self.client.send_email(
                Destination={"ToAddresses": destinations},
                Content={"Raw": {"Data": raw}},
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            transient = code in _TRANSIENT or status >= 500
            detail = f"SES {code}: {error.response.get('Error', {}).get('Message', '')}"
            return {r: SendResult(ok=False, transient=transient, detail=detail) for r in recipients}
        detail = f"SES message {response.get('MessageId', '')}"
        return {r: SendResult(ok=True, detail=detail) for r in recipients}
