"""A TTL cache in front of any Resolver: a message's SPF, DKIM and DMARC lookups, and the next
message's from the same sender, are answered from memory while the records' TTLs allow."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from mxgate.ports import DnsAnswer, Resolver

MAX_TTL = 3600.0  # never trust an answer longer than this, whatever its TTL says


class CachingResolver:
    """Keeps answers (NXDOMAIN and NODATA too) for their TTL; failures are never kept, so the
    next message asks again."""

    def __init__(
        self,
        inner: Resolver,
        *,
        max_entries: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.max_entries = max_entries
        self._monotonic = monotonic
        self._answers: OrderedDict[tuple[str, str], tuple[float, DnsAnswer]] = OrderedDict()

    def query(self, name: str, rrtype: str) -> DnsAnswer:
        key = (name.lower().rstrip("."), rrtype)
        now = self._monotonic()
        cached = self._answers.get(key)
        if cached is not None and cached[0] > now:
            self._answers.move_to_end(key)
            return cached[1]
        answer = self.inner.query(name, rrtype)  # DnsFailure passes through, uncached
        ttl = min(max(answer.ttl, 0.0), MAX_TTL)
        if ttl > 0:
            self._answers[key] = (now + ttl, answer)
            self._answers.move_to_end(key)
            while len(self._answers) > self.max_entries:
                self._answers.popitem(last=False)
        return answer
