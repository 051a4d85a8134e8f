"""The ObjectStore port on S3."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from botocore.exceptions import ClientError

from mxgate.adapters.aws.failures import error_code, is_transient
from mxgate.errors import PermanentError, TransientError
from mxgate.ports import ObjectInfo

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


class S3ObjectStore:
    def __init__(self, client: S3Client, link_seconds: int = 7 * 24 * 3600) -> None:
        self.client = client
        self.link_seconds = link_seconds

    def put(
        self, bucket: str, key: str, body: bytes, metadata: Mapping[str, str] | None = None
    ) -> ObjectInfo:
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=dict(metadata or {}))
        except ClientError as error:
            raise _failure(error, f"s3://{bucket}/{key}") from error
        return ObjectInfo(bucket, key, len(body), dict(metadata or {}))

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

    def delete(self, bucket: str, key: str) -> None:
        """Remove an object (gone already: nothing to do, as S3 answers)."""
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except ClientError as error:
            raise _failure(error, f"s3://{bucket}/{key}") from error

    def link(self, bucket: str, key: str) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.link_seconds
        )
