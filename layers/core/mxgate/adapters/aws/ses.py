"""The Transport port on SES sending (SESv2 SendEmail with raw content).

The recipients are rewritten to the mailbox host's routing domain (`alice@example.com` ->
`alice@example.com.test-google-a.com`), so SES hands the message to that host and not back
to the domain's MX, which is this gateway. SES picks the envelope sender itself (its own
bounce domain, or the identity's custom MAIL FROM domain): it cannot be preserved.

Errors are classified by SES error code: throttling, quotas, a paused or suspended account
and service failures are transient (the state machine retries, then defers, which gives an
operator the queue lifetime to fix an account problem); a rejected message or an unverified
identity is permanent. Network failures are transient.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from mxgate.adapters.aws.failures import error_code, is_transient
from mxgate.message.raw import RawMessage
from mxgate.ports import SendResult
from mxgate.routing.routes import SES_MAX_MESSAGE_BYTES, routed_address

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client

MAX_RECIPIENTS = 50  # SES: at most 50 recipients per message

# Besides throttling and service failures (failures.is_transient):
SES_TRANSIENT_CODES = frozenset(
    {
        "LimitExceededException",  # the daily sending quota: it refills
        "SendingPausedException",  # the account or configuration set is paused: an operator fixes it
        "AccountSuspendedException",
    }
)
# Permanent, for the record: MessageRejected, MailFromDomainNotVerifiedException,
# BadRequestException, NotFoundException, AccessDeniedException and anything unknown.


def classify_client_error(error: ClientError) -> SendResult:
    transient = is_transient(error, also=SES_TRANSIENT_CODES)
    message = error.response.get("Error", {}).get("Message", "")
    return SendResult(
        ok=False, transient=transient, detail=f"SES {error_code(error)}: {message}".strip()
    )


class SesTransport:
    requires_verified_sender = True

    def __init__(
        self,
        client: SESV2Client,
        routing_domain: str | None = None,
        *,
        configuration_set: str | None = None,
        max_message_bytes: int = SES_MAX_MESSAGE_BYTES,
    ) -> None:
        self.client = client
        self.routing_domain = routing_domain
        self.configuration_set = configuration_set
        self.max_message_bytes = max_message_bytes

    def send(
        self,
        envelope_sender: str,
        recipients: Sequence[str],
        raw: RawMessage,
        tags: Mapping[str, str] | None = None,
    ) -> Mapping[str, SendResult]:
        data = raw.read()  # SESv2 takes the raw message as one blob (40 MB at most)
        results: dict[str, SendResult] = {}
        for start in range(0, len(recipients), MAX_RECIPIENTS):
            chunk = recipients[start : start + MAX_RECIPIENTS]
            results.update(self._send(chunk, data, tags or {}))
        return results

    def _send(
        self, recipients: Sequence[str], raw: bytes, tags: Mapping[str, str]
    ) -> dict[str, SendResult]:
        destinations = [routed_address(r, self.routing_domain) for r in recipients]
        extra: dict[str, object] = {}
        if self.configuration_set:  # its event destination reports what the mailbox host did
            extra["ConfigurationSetName"] = self.configuration_set
            extra["EmailTags"] = [
                {"Name": name, "Value": _tag_value(value)} for name, value in tags.items()
            ]
        try:
            response = self.client.send_email(
                Destination={"ToAddresses": destinations},
                Content={"Raw": {"Data": raw}},
                **extra,  # type: ignore[arg-type]
            )
        except ClientError as error:
            result = classify_client_error(error)
            return dict.fromkeys(recipients, result)
        except BotoCoreError as error:  # no connection, a timeout: try again later
            failed = SendResult(ok=False, transient=True, detail=f"SES unreachable: {error}")
            return dict.fromkeys(recipients, failed)
        detail = f"SES message {response.get('MessageId', '')}: accepted by SES"
        # SES hands it to the mailbox host later: relayed, until its configuration set's event
        # destination says what the host did (without one, it stays relayed)
        return {r: SendResult(ok=True, detail=detail, relayed=True) for r in recipients}


def _tag_value(value: str) -> str:
    """SES message tag values take letters, digits, `_` and `-` (256 at most)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", value)[:256]
