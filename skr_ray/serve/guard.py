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
    """An admission bound: at most ``limit`` model requests inside at once. A request beyond it is answered 503
    at once instead of joining a queue whose wait would only grow under sustained overload, so the requests that
    are accepted keep their latency. Each ingress replica holds a fixed one (its share of ``max_in_flight``);
    each backbone replica holds an adaptive one, the only place that sees every request the model runs (an
    ingress replica sees its own share only, and one request per ingress replica would already be its floor).
    Both run on their replica's event loop, one request at a time between awaits: plain counters are enough.

    ``ceiling`` is the hard bound (0: none, and no adaptation). With ``tolerance`` > 0 the bound adapts below the
    ceiling as TCP's congestion window does: it starts at one request, so the best latency of each route is seen
    unloaded, and grows by one per answer within the tolerance (doubling each round) until the first slow answer;
    from then on an answered request that took at most ``tolerance`` x the best latency seen on its route raises
    the bound by 1/bound (about one per round of requests) and a slower one lowers it by ``DECREASE``. On a GPU a
    batch of 16 costs about what one request costs, and the bound stays near its ceiling; on a CPU a batch costs
    what its requests cost one by one, and the bound settles at the one or two requests whose wait stays within
    the tolerance. The best latency drifts up by ``DRIFT`` per answer, so a lasting change of the model's speed is
    learnt."""

    DECREASE = 0.9
    DRIFT = 1.0002

    def __init__(self, ceiling: int, tolerance: float = 0.0) -> None:
        self.ceiling = int(ceiling)
        self.tolerance = float(tolerance) if self.ceiling else 0.0
        self.bound = 1.0 if self.tolerance else float(self.ceiling)
        self.slow_start = bool(self.tolerance)
        self.best: dict[str, float] = {}
        self.count = 0
        self.shed = 0
        self.admitted = 0

    @property
    def limit(self) -> int:
        return max(int(self.bound), 1) if self.ceiling else 0

    @property
    def full(self) -> bool:
        """No place left: the next request would be shed."""
        return bool(self.ceiling) and self.count >= self.limit

    def enter(self) -> bool:
        if self.full:
            self.shed += 1
            return False
        self.count += 1
        self.admitted += 1
        return True

    def leave(self, route: str | None = None, seconds: float | None = None) -> None:
        """One request left; ``route`` and ``seconds`` (answered requests only) steer the adaptive bound."""
        self.count -= 1
        if not self.tolerance or route is None or seconds is None:
            return
        best = min(self.best.get(route, seconds) * self.DRIFT, seconds)
        self.best[route] = best
        if seconds <= self.tolerance * best:
            step = 1.0 if self.slow_start else 1.0 / max(self.bound, 1.0)
            self.bound = min(self.bound + step, float(self.ceiling))
        else:
            self.slow_start = False
            self.bound = max(self.bound * self.DECREASE, 1.0)


IN_FLIGHT = InFlight(0)

DEFAULT_LATENCY_TOLERANCE = 1.5
"""``latency_tolerance``: each backbone replica's admission bound adapts (below its share of ``max_in_flight``) so
that the requests it runs take at most about this many times the best latency seen for their kind (0: only the
fixed bound at max_in_flight, kept by the ingress)."""


class Shed:
    """What a backbone replica answers instead of running a request beyond its admission bound (a value, not an
    exception: shedding half the requests under overload must not write a stack trace for each)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit


def configure(digests: list[str] | None, max_request_bytes: int, requests_per_minute: int = 0,
              max_in_flight: int = 0, app_requests_per_minute: int | None = None) -> None:
    """Set what the middleware checks (called by the ingress replica's constructor)."""
    global LIMITER, IN_FLIGHT
    if requests_per_minute < 0:
        raise ValueError(f"auth.requests_per_minute must be >= 0 (0: no limit), got {requests_per_minute}")
    check_admission(max_in_flight, 0.0)
    CONFIG.update(digests=digests, max_request_bytes=int(max_request_bytes))
    LIMITER = RateLimiter(int(requests_per_minute), app_limit=app_requests_per_minute)
    IN_FLIGHT = InFlight(int(max_in_flight))  # fixed: the adaptive bound is the backbone replica's


def check_admission(max_in_flight: int, latency_tolerance: float) -> None:
    """The admission options' allowed values (checked when the app is built and again by each replica)."""
    if max_in_flight < 0:
        raise ValueError(f"max_in_flight must be >= 0 (0: no bound), got {max_in_flight}")
    if latency_tolerance < 0 or 0 < latency_tolerance < 1:
        raise ValueError(f"latency_tolerance must be 0 (a fixed bound) or >= 1, got {latency_tolerance}")


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
