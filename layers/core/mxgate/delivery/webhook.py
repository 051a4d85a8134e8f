"""Signed webhooks: an event POSTed as JSON, with an HMAC-SHA256 signature the receiver checks.

Headers of every request:
  X-Mxgate-Event-Id    the event's id: the same on every retry, so receivers can drop repeats
  X-Mxgate-Timestamp   Unix seconds when this attempt was signed
  X-Mxgate-Signature   `v1=` + hex HMAC-SHA256(key, timestamp + "." + body)
The receiver recomputes the HMAC over the raw body it received, compares in constant time, and
refuses timestamps more than a few minutes old (replays). A 2xx answer is success; 408, 429,
5xx and network errors are transient (retried, then deferred); other answers are permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.error
import urllib.request
from collections.abc import Mapping

from mxgate.errors import PermanentError, TransientError
from mxgate.ports import Clock
from mxgate.routing.routes import Routes

EVENT_ID_HEADER = "X-Mxgate-Event-Id"
TIMESTAMP_HEADER = "X-Mxgate-Timestamp"
SIGNATURE_HEADER = "X-Mxgate-Signature"
_TRANSIENT_STATUS = {408, 425, 429}


def signature(key: bytes, timestamp: str, body: bytes) -> str:
    digest = hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(key: bytes, timestamp: str, body: bytes, received: str) -> bool:
    """What a receiver does (and what the tests check)."""
    return hmac.compare_digest(signature(key, timestamp, body), received)


class SignedPoster:
    """POSTs bodies to URLs, signed with the key of the secret they name."""

    def __init__(self, keys: Mapping[str, bytes], clock: Clock, user_agent: str = "mxgate") -> None:
        self.keys = keys  # secret_env name -> key, resolved once by the composition root
        self.clock = clock
        self.user_agent = user_agent

    def post(self, url: str, secret: str, event_id: str, body: bytes, timeout: float) -> str:
        key = self.keys.get(secret)
        if key is None:
            raise PermanentError(f"no key for webhook secret {secret} (set that variable)")
        timestamp = str(int(self.clock.now().timestamp()))
        request = urllib.request.Request(  # noqa: S310 -- the URL comes from the routes file, http(s) only
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": self.user_agent,
                EVENT_ID_HEADER: event_id,
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: signature(key, timestamp, body),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return f"{url}: {response.status}"
        except urllib.error.HTTPError as error:
            error.close()  # it holds the response's socket
            detail = f"{url}: HTTP {error.code}"
            if error.code >= 500 or error.code in _TRANSIENT_STATUS:
                raise TransientError(detail) from error
            raise PermanentError(detail) from error
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            raise TransientError(f"{url}: {getattr(error, 'reason', error)}") from error


def signing_keys(routes: Routes, environ: Mapping[str, str]) -> dict[str, bytes]:
    """The webhook and hook keys the routes name (by variable), from the environment."""
    names = {a.webhook.secret_env for a in routes.apps.values() if a.webhook is not None}
    names |= {h.secret_env for h in routes.hooks.values() if h.secret_env is not None}
    return {n: environ[n].encode() for n in names if environ.get(n)}
