"""What the HTTP guard of the Serve ingress checks, set by the replica's Api.

A module of its own: the ingress class reaches the replica as a copy (Serve pickles it by value), while the
FastAPI middleware is imported by reference, so both must look the settings up here through the import system.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any

CONFIG: dict[str, Any] = {"digests": [], "max_request_bytes": 32 * 2**20}
"""digests: SHA-256 of the accepted API keys ([] = none accepted yet; None = authentication disabled). Each key's
request limit per ingress replica is ``LIMITER.per_minute`` (0: none)."""

KEY_ID_CHARS = 12
"""A key's id in logs and errors: the first characters of its SHA-256 digest (never the key itself)."""


def key_id(digest: str) -> str:
    return digest[:KEY_ID_CHARS]


class RateLimiter:
    """At most ``per_minute`` requests per key in any 60-second window (a sliding log per key). ``admit`` answers
    None when the request may go on, else the seconds until the key's oldest request in the window ages out (the
    ``Retry-After`` a client should wait). One instance per ingress replica, holding that replica's even share of
    the app-wide limit ``app_limit`` (Serve's proxy spreads requests over the replicas)."""

    WINDOW_S = 60.0

    def __init__(self, per_minute: int, clock: Any = time.monotonic, app_limit: int | None = None) -> None:
        self.per_minute = int(per_minute)
        self.app_limit = self.per_minute if app_limit is None else int(app_limit)
        self.clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def admit(self, key: str) -> float | None:
        if self.per_minute <= 0:
            return None
        now = self.clock()
        with self._lock:
            seen = self._seen.setdefault(key, deque())
            while seen and now - seen[0] >= self.WINDOW_S:
                seen.popleft()
            if len(seen) >= self.per_minute:
                return max(self.WINDOW_S - (now - seen[0]), 0.0)
            seen.append(now)
            if len(self._seen) > 4 * max(len(CONFIG["digests"] or ()), 1):  # keys gone quiet: drop their logs
                for k in [k for k, q in self._seen.items() if not q or now - q[-1] >= self.WINDOW_S]:
                    del self._seen[k]
            return None


LIMITER = RateLimiter(0)


class InFlight:
    """Admission bound: at most ``limit`` model requests inside one ingress replica at once (0: no bound). A
    request beyond it is answered 503 at once instead of joining a queue whose wait would only grow under
    sustained overload, so the requests that are accepted keep their latency. The middleware runs on the
    replica's event loop, one request at a time between awaits: plain counters are enough."""

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self.count = 0
        self.shed = 0
        self.admitted = 0

    def enter(self) -> bool:
        if self.limit and self.count >= self.limit:
            self.shed += 1
            return False
        self.count += 1
        self.admitted += 1
        return True

    def leave(self) -> None:
        self.count -= 1


IN_FLIGHT = InFlight(0)


def configure(digests: list[str] | None, max_request_bytes: int, requests_per_minute: int = 0,
              max_in_flight: int = 0, app_requests_per_minute: int | None = None) -> None:
    """Set what the middleware checks (called by the ingress replica's constructor)."""
    global LIMITER, IN_FLIGHT
    if requests_per_minute < 0:
        raise ValueError(f"auth.requests_per_minute must be >= 0 (0: no limit), got {requests_per_minute}")
    if max_in_flight < 0:
        raise ValueError(f"max_in_flight must be >= 0 (0: no bound), got {max_in_flight}")
    CONFIG.update(digests=digests, max_request_bytes=int(max_request_bytes))
    LIMITER = RateLimiter(int(requests_per_minute), app_limit=app_requests_per_minute)
    IN_FLIGHT = InFlight(int(max_in_flight))


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
