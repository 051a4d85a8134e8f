"""The ObjectStore port on S3."""

from __future__ import annotations

import io
import posixpath
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from botocore.exceptions import ClientError

from mxgate.adapters.aws.failures import error_code, is_transient
from mxgate.adapters.aws.links import SignedLinks
from mxgate.clock import SystemClock
from mxgate.errors import PermanentError, TransientError
from mxgate.ports import Clock, ObjectInfo

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}


def _failure(error: ClientError, what: str) -> Exception:
    code = error_code(error)
    if code in _MISSING:
        return PermanentError(f"{what}: not found")
    if is_transient(error):
        return TransientError(f"{what}: {code}")
    return PermanentError(f"{what}: {code}")


PRESIGN_MAX_SECONDS = 7 * 24 * 3600  # SigV4's limit (and a Lambda session ends far sooner)


class S3ObjectStore:
    """`links`: the stack's signed download links (adapters/aws/links.py); without them, a
    link is a presigned URL, which dies with the credentials that signed it."""

    def __init__(
        self,
        client: S3Client,
        link_seconds: int = PRESIGN_MAX_SECONDS,
        links: SignedLinks | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.link_seconds = link_seconds
        self.links = links
        self.clock = clock or SystemClock()

    def put(
        self,
        bucket: str,
        key: str,
        body: bytes | BinaryIO,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        if isinstance(body, bytes):
            size = len(body)
        else:  # a seekable stream: botocore reads it in chunks, after its length
            start = body.tell()
            size = body.seek(0, io.SEEK_END) - start
            body.seek(start)
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=dict(metadata or {}))
        except ClientError as error:
            raise _failure(error, f"s3://{bucket}/{key}") from error
        return ObjectInfo(bucket, key, size, dict(metadata or {}))

    def head(self, bucket: str, key: str) -> ObjectInfo:
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            raise _failure(error, f"s3://{bucket}/{key}") from error
        return ObjectInfo(bucket, key, head["ContentLength"], head.get("Metadata", {}))

    def open(self, bucket: str, key: str) -> BinaryIO:
        try:
            body: Any = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as error:
            raise _failure(error, f"s3://{bucket}/{key}") from error
        return cast(BinaryIO, body)

    def get(self, bucket: str, key: str) -> bytes:
        stream = self.open(bucket, key)
        try:
            return stream.read()
        finally:
            stream.close()

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error_code(error) in _MISSING:
                return False
            raise _failure(error, f"s3://{bucket}/{key}") from error
        return True

    def copy(self, source_bucket: str, source_key: str, bucket: str, key: str) -> None:
        """CopyObject: S3 copies the bytes and the metadata itself (up to 5 GB)."""
        try:
            self.client.copy_object(
                CopySource={"Bucket": source_bucket, "Key": source_key}, Bucket=bucket, Key=key
            )
        except ClientError as error:
            raise _failure(error, f"s3://{source_bucket}/{source_key}") from error

    def delete(self, bucket: str, key: str) -> None:
        """Remove an object (gone already: nothing to do, as S3 answers)."""
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except ClientError as error:
            raise _failure(error, f"s3://{bucket}/{key}") from error

    def link(self, bucket: str, key: str, expires_at: datetime | None = None) -> str:
        now = self.clock.now()
        until = expires_at or now + timedelta(seconds=self.link_seconds)
        if self.links is not None:
            return self.links.link(bucket, key, until)
        seconds = int((until - now).total_seconds())
        return self.presigned(bucket, key, max(1, min(seconds, PRESIGN_MAX_SECONDS)))

    def presigned(self, bucket: str, key: str, seconds: int) -> str:
        params: dict[str, str] = {"Bucket": bucket, "Key": key}
        if key.startswith("raw/"):  # a stored message: it downloads as an .eml file
            name = posixpath.basename(key)
            params["ResponseContentDisposition"] = f'attachment; filename="{name}.eml"'
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)
