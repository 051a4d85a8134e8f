"""The replay history on AWS: the raw-mail bucket the rule set's WriteToS3 fills. Each object
is one message after the rule set's AddHeader actions, its envelope beside it when the
pipeline keeps one (`envelopes/<key>.json`), else taken from the To and Cc fields.

Neither says which TLS version the session used: the message was accepted, and Mail Manager
speaks TLS 1.2 and 1.3 only, so replay takes TLS 1.2 (the weaker) for it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mxgate.adapters.aws.s3 import S3ObjectStore
from mxgate.message.parse import parse_message
from mxgate.records import ENVELOPE_PREFIX
from mxgate.replay.decisions import StoredMessage
from mxgate.replay.received import as_received
from mxgate.routing.routes import Routes
from mxgate.workflow.envelope import read_envelope

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ASSUMED_TLS = "TLS1_2"


class RawBucketHistory:
    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str,
        *,
        routes: Routes,
        added: Sequence[tuple[str, str]],
    ) -> None:
        self.client = client
        self.objects = S3ObjectStore(client)
        self.bucket = bucket
        self.prefix = prefix
        self.routes = routes
        self.added = list(added)

    def keys(self, since: datetime | None, limit: int | None) -> list[tuple[str, datetime]]:
        """The stored messages written since `since` (the newest `limit`), oldest first."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        found: list[Any] = [
            item
            for page in pages
            for item in page.get("Contents", [])
            if not item["Key"].startswith(ENVELOPE_PREFIX)
            and (since is None or item["LastModified"] >= since)
        ]
        found.sort(key=lambda item: (item["LastModified"], item["Key"]))
        chosen = found[-limit:] if limit else found
        return [(item["Key"], item["LastModified"]) for item in chosen]

    def read(self, key: str, written: datetime) -> StoredMessage:
        stored = self.objects.get(self.bucket, key)
        raw = as_received(stored, self.added)
        envelope = read_envelope(self.objects, self.bucket, key, parse_message(raw), self.routes)
        if envelope.tls_protocol is None:
            envelope = envelope.model_copy(update={"tls_protocol": ASSUMED_TLS})
        return StoredMessage(envelope=envelope, raw=raw, received_at=written)

    def messages(self, since: datetime | None, limit: int | None) -> Iterator[StoredMessage]:
        for key, written in self.keys(since, limit):
            yield self.read(key, written)
