"""Per-tenant API request rate limit: GCRA (the generic cell rate algorithm), in memory.

GCRA is a token bucket kept as one number per key, the theoretical arrival time (TAT) of the
next request: each admitted request pushes it `interval` (1/rate) further, and a request is
refused while the TAT lies more than `burst` intervals ahead of now. So a tenant may send
`burst` requests at once, then `rate` per second; the time until the next admission is exact,
which gives the `Retry-After`. A request may be worth several (a batch): it then pushes the
TAT that many intervals and needs that much room.

The state is per process: N API processes admit up to N times the rate. That bounds what one
tenant can make one process do, which is the aim (the upstream budget, which must hold across
replicas, lives in Postgres instead; see app.providers.repository).

Pure and synchronous: no I/O, no awaits, so one event loop needs no lock, and the clock is
injected for the tests.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

# Far above any realistic number of tenants active within one burst window; reached only if
# someone mints keys by the thousand, and then the least recently seen lose their state (they
# get a fresh burst), never the memory.
DEFAULT_MAX_KEYS = 10_000


class TenantRateLimiter:
    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if rate_per_s < 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate_per_s must be >= 0, burst and max_keys >= 1")
        self.enabled = rate_per_s > 0
        self._interval = 1.0 / rate_per_s if self.enabled else 0.0
        # How far ahead of now the TAT may be for a request to pass: burst - 1 intervals.
        self._tolerance = self._interval * (burst - 1)
        self._burst = burst
        self._clock = clock
        self._max_keys = max_keys
        # Least recently admitted first, so idle keys are found at the front.
        self._tat: OrderedDict[str, float] = OrderedDict()

    def acquire(self, key: str, cost: int = 1) -> float:
        """Admit one request for `key` worth `cost` requests (at most `burst`, so that it can
        pass at all) and return 0, or refuse it and return the seconds until one would be
        admitted (nothing is consumed by a refusal)."""
        if not self.enabled:
            return 0.0
        cost = max(1, min(cost, self._burst))
        now = self._clock()
        tat = max(self._tat.get(key, now), now)
        wait = tat + (cost - 1) * self._interval - self._tolerance - now
        if wait > 0:
            return wait
        self._tat[key] = tat + cost * self._interval
        self._tat.move_to_end(key)
        self._evict(now)
        return 0.0

    def _evict(self, now: float) -> None:
        # A key whose TAT has passed is indistinguishable from an unknown one: drop it. The
        # front holds the least recently admitted, so this stops at the first live key and
        # costs O(1) amortized.
        while self._tat:
            key, tat = next(iter(self._tat.items()))
            if tat > now and len(self._tat) <= self._max_keys:
                break
            del self._tat[key]

    def __len__(self) -> int:
        return len(self._tat)


def retry_after_header(wait_s: float) -> int:
    """`Retry-After` is whole seconds; round up and never say 0 (that invites a retry storm)."""
    return max(1, math.ceil(wait_s))
