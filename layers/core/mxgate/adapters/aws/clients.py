"""boto3 clients made on first use and then kept for the container's life.

A cold start pays for the clients a function calls, not for all of them: creating the S3 and
SESv2 clients alone costs about 0.6 s on a cold start (TOOLING.md), and the Process function
never sends mail.

Retries: botocore retries a throttled or failed call itself (standard mode, 3 attempts in all),
except where the state machine owns the retry: a throttled SES send is retried by the Deliver
state's Retry, with its backoff and jitter, instead of inside a billed Lambda invocation.
"""

from __future__ import annotations

from typing import Any

from botocore.config import Config

# Per service, how many attempts botocore makes in all; 3 for the others.
ATTEMPTS = {"sesv2": 1}
# Presigned links to stored messages are signed with SigV4 (SigV2 is refused in newer regions).
SIGNATURES = {"s3": "s3v4"}


class LazyClient:
    """Stands in for `boto3.client(service)` and creates it on the first attribute access."""

    def __init__(
        self,
        service: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        session: Any = None,
    ) -> None:
        self._service = service
        self._endpoint_url = endpoint_url  # another endpoint (a moto server), or AWS's own
        self._region = region
        self._session = session  # a boto3 session (an operator's profile); None: the default
        self._client: Any = None
        self._config = Config(
            retries={"mode": "standard", "total_max_attempts": ATTEMPTS.get(service, 3)},
            connect_timeout=5,
            read_timeout=20,
            signature_version=SIGNATURES.get(service),
        )

    @property
    def created(self) -> bool:
        return self._client is not None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            import boto3  # noqa: PLC0415 -- imported with the first client, not with the module

            factory = self._session or boto3
            self._client = factory.client(
                self._service,
                config=self._config,
                endpoint_url=self._endpoint_url,
                region_name=self._region,
            )
        return getattr(self._client, name)
