"""The replay history on AWS: the raw-mail bucket the rule set's WriteToS3 fills. Each object
is one message after the rule set's AddHeader actions; its envelope is the one Mail Manager's
InvokeLambda event brought, kept in the message's arrival record (adapters/aws/arrivals.py, 14
days). A message without one is left out (`skipped`): its recipients are not known.

Neither says which TLS version the session used: the message was accepted, and Mail Manager
speaks TLS 1.2 and 1.3 only, so replay takes TLS 1.2 (the weaker) for it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mxgate.adapters.aws.arrivals import DynamoArrivals
from mxgate.adapters.aws.s3 import S3ObjectStore
from mxgate.records import ENVELOPE_PREFIX, message_id_of
from mxgate.replay.decisions import StoredMessage
from mxgate.replay.received import as_received

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
        arrivals: DynamoArrivals,
        added: Sequence[tuple[str, str]],
    ) -> None:
        self.client = client
        self.objects = S3ObjectStore(client)
        self.bucket = bucket
        self.prefix = prefix
        self.arrivals = arrivals
        self.added = list(added)
        self.skipped = 0  # stored messages without an envelope

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

    def read(self, key: str, written: datetime) -> StoredMessage | None:
        arrival = self.arrivals.get(message_id_of(key))
        envelope = arrival.envelope if arrival is not None else None
        if envelope is None:
            self.skipped += 1
            return None
        raw = as_received(self.objects.get(self.bucket, key), self.added)
        if envelope.tls_protocol is None:
            envelope = envelope.model_copy(update={"tls_protocol": ASSUMED_TLS})
        return StoredMessage(envelope=envelope, raw=raw, received_at=written)

    def messages(self, since: datetime | None, limit: int | None) -> Iterator[StoredMessage]:
        for key, written in self.keys(since, limit):
            message = self.read(key, written)
            if message is not None:
                yield message
