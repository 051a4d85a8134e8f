"""boto3 clients made on first use and then kept for the container's life.

A cold start pays for the clients a function calls, not for all of them: creating the S3 and
SESv2 clients alone costs about 0.6 s on a cold start (TOOLING.md), and the Process function
never sends mail.
"""

from __future__ import annotations

from typing import Any


class LazyClient:
    """Stands in for `boto3.client(service)` and creates it on the first attribute access."""

    def __init__(self, service: str) -> None:
        self._service = service
        self._client: Any = None

    @property
    def created(self) -> bool:
        return self._client is not None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            import boto3  # noqa: PLC0415 -- imported with the first client, not with the module

            self._client = boto3.client(self._service)  # type: ignore[call-overload]
        return getattr(self._client, name)
