"""Load limits of one server process: token buckets per caller, in-flight slots per tenant.

Every limit lives in this process's memory. With ``uvicorn --workers N`` each process keeps its
own buckets and slots, so a caller may get up to N times the configured rate and a tenant up to
N times the configured concurrency (docs/security.md, "API hardening"). Keeping them in the
state store would cost a write per request; the privacy budget, which must be exact, is in the
ledger instead.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sandbox.errors import PayloadTooLarge


def retry_after(seconds: float) -> int:
    """Whole seconds for a ``Retry-After`` header (RFC 9110 §10.2.3): rounded up, at least 1."""
    return max(1, math.ceil(seconds))


def too_large(limit: int) -> PayloadTooLarge:
    """The refusal of a request body over ``limit`` bytes."""
    return PayloadTooLarge(f"the request body has at most {limit} bytes", limit=limit)


@dataclass
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """One token bucket per caller: ``burst`` tokens, refilled at ``rate`` per second.

    At most ``max_callers`` buckets are kept; beyond that the least recently used is dropped
    (it has refilled the most, so dropping it forgives the least). Thread-safe.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_callers: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_callers = max_callers
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def _refilled(self, caller: str, at: float) -> _Bucket:
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = _Bucket(self.burst, at)
            self._buckets[caller] = bucket
            if len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (at - bucket.at) * self.rate)
            bucket.at = at
            self._buckets.move_to_end(caller)
        return bucket

    def take(self, caller: str) -> float:
        """Take a token: 0.0 if there was one, else the seconds until there will be."""
        with self._lock:
            bucket = self._refilled(caller, self.clock())
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate

    def wait(self, caller: str) -> float:
        """Like :meth:`take` without taking: 0.0 if a token is there now."""
        with self._lock:
            if caller not in self._buckets:
                return 0.0
            bucket = self._refilled(caller, self.clock())
            return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / self.rate

    def charge(self, caller: str) -> None:
        """Take a token after the fact if there is one (e.g. for a failed authentication)."""
        with self._lock:
            bucket = self._refilled(caller, self.clock())
            bucket.tokens = max(0.0, bucket.tokens - 1.0)


class InFlight:
    """Counts in-flight requests per tenant; :meth:`enter` refuses beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("an in-flight limit is at least 1")
        self.limit = limit
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def enter(self, tenant: str) -> bool:
        with self._lock:
            count = self._counts.get(tenant, 0)
            if count >= self.limit:
                return False
            self._counts[tenant] = count + 1
            return True

    def leave(self, tenant: str) -> None:
        with self._lock:
            count = self._counts.get(tenant, 0) - 1
            if count > 0:
                self._counts[tenant] = count
            else:
                self._counts.pop(tenant, None)

    def count(self, tenant: str) -> int:
        with self._lock:
            return self._counts.get(tenant, 0)
