"""Download links that work as long as they say.

A presigned S3 URL made inside a Lambda function dies with the function's session credentials
(hours), whatever its X-Amz-Expires says: a claim check opened three days later would fail.
So the links mxgate hands out point at its own Download function instead, and carry their end
in themselves, signed with the stack's link key (HMAC-SHA256): `<download URL>?b=<bucket>&
k=<key>&e=<unix time>&s=<signature>`. The Download function checks the signature and the time,
and answers with a redirect to a presigned URL of its own, fresh, for a few minutes. Nobody
can make a link, or stretch one, without the key; a link to another bucket is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

DOWNLOAD_SECONDS = 300  # how long the redirect's own presigned URL works


class LinkRefusedError(Exception):
    """A link that does not open: `status` is the HTTP answer (403 forged, 410 expired)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class SignedLinks:
    base_url: str  # the Download function's URL
    key: bytes

    def _signature(self, bucket: str, key: str, expires: int) -> str:
        mac = hmac.new(self.key, f"{bucket}\n{key}\n{expires}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).decode("ascii").rstrip("=")

    def link(self, bucket: str, key: str, expires_at: datetime) -> str:
        expires = int(expires_at.timestamp())
        query = {
            "b": bucket,
            "k": key,
            "e": str(expires),
            "s": self._signature(bucket, key, expires),
        }
        return f"{self.base_url.rstrip('/')}/?{urlencode(query)}"

    def opened(self, query: Mapping[str, str], now: datetime, bucket: str) -> tuple[str, str]:
        """(bucket, key) of a link that opens now; LinkRefusedError otherwise."""
        try:
            link_bucket, key, expires = query["b"], query["k"], int(query["e"])
            signature = query["s"]
        except (KeyError, ValueError):
            raise LinkRefusedError(403, "not a download link of this gateway") from None
        expected = self._signature(link_bucket, key, expires)
        if not hmac.compare_digest(signature, expected) or link_bucket != bucket:
            raise LinkRefusedError(403, "not a download link of this gateway")
        if now.astimezone(UTC).timestamp() > expires:
            ends = datetime.fromtimestamp(expires, UTC)
            raise LinkRefusedError(410, f"this link stopped working on {ends:%Y-%m-%d %H:%M} UTC")
        return link_bucket, key
