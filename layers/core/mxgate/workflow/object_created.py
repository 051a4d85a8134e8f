"""The event that starts an execution: S3 "Object Created", as EventBridge delivers it
(the fields S3 always sets, so the Process function's parser reads this one too)."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def object_created_event(
    bucket: str,
    key: str,
    size: int,
    now: datetime,
    *,
    region: str = "us-east-1",
    account: str = "000000000000",
) -> dict[str, Any]:
    return {
        "version": "0",
        "id": f"local-{bucket}-{key}",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": account,
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {"key": key, "size": size},
            "request-id": "local",
            "requester": account,
            "reason": "PutObject",
        },
    }
