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
    """An admission bound: a model request that would wait too long is answered 503 at once instead of joining
    a queue whose wait would only grow under sustained overload, so the requests that are accepted keep their
    latency. Each ingress replica holds a fixed one (its share of ``max_in_flight``); each backbone replica holds
    an adaptive one, the only place that sees every request its model runs and every batch. Both run on their
    replica's event loop, one request at a time between awaits: plain state is enough.

    ``ceiling`` is the hard bound on requests inside (0: none, and no adaptation). With ``tolerance`` > 0 a
    request is admitted by its predicted latency: what is left of its route's running batch, then the next
    batch, which it shares with the requests of its route already waiting. A batch of n inputs is predicted to
    cost ``cost`` x (1 + ``share`` x (n - 1)): ``cost`` is the moving average of a route's batches of one, and
    ``share`` is learnt from larger batches, about 1 where a batch costs what its inputs cost one by one (a CPU)
    and near 0 where it costs about one (a GPU); the other routes' batches, which share the processors, add
    ``share`` x their remaining work. A request is shed when its prediction, or the one it would make
    for a request already waiting, exceeds ``tolerance`` x its route's cost. So on a CPU the next request is
    admitted while the running one is finishing (the model does not idle while the proxy brings it) and no
    admitted request waits a whole request behind another; on a GPU every request that can still ride the next
    batch in time is admitted, up to the ceiling. A new route's requests are admitted one at a time until a
    batch of one has measured its cost. ``share`` starts at 0 (batches are free) so that a shared batch
    happens and teaches it: the first such batches count fully, later ones as a moving average."""

    LEARN = 0.1
    """Weight of each batch in the moving estimates (a route's cost, ``share`` after its first batches)."""

    class Ticket:
        """One admitted request: its route, its inputs, when it came in, whether its batch has begun."""

        __slots__ = ("route", "items", "start", "running")

        def __init__(self, route: str | None, items: int, start: float) -> None:
            self.route, self.items, self.start, self.running = route, items, start, False

    def __init__(self, ceiling: int, tolerance: float = 0.0, clock: Any = time.perf_counter) -> None:
        self.ceiling = int(ceiling)
        self.tolerance = float(tolerance) if self.ceiling else 0.0
        self.clock = clock
        self.cost: dict[str, float] = {}
        self.share = 0.0
        self._shared = 0  # batches of more than one input seen (``share``'s first ones count fully)
        self.inside: list[InFlight.Ticket] = []  # in order of admission (a route's batches take them in order)
        self._busy_until: dict[str, float] = {}  # a route's running batch: when it is expected to end
        self.shed = 0
        self.admitted = 0

    @property
    def count(self) -> int:
        return len(self.inside)

    @property
    def limit(self) -> int:
        """Requests inside that the bound allows now (0: no bound); for messages."""
        if not self.ceiling:
            return 0
        return max(self.count, 1) if self.tolerance and self.full else self.ceiling

    def batch_seconds(self, route: str, inputs: int) -> float:
        return self.cost[route] * (1.0 + self.share * max(inputs - 1, 0))

    def may_share(self, route: str) -> bool:
        """Whether a batch of ``route`` may wait for a second request: with no tolerance (a fixed bound), or
        where a batch of two is predicted within it (on a CPU a batch costs its parts, and the second request
        would be shed anyway)."""
        if not self.tolerance or route not in self.cost:
            return not self.tolerance
        return self.batch_seconds(route, 2) <= self.tolerance * self.cost[route]

    def _waiting(self, route: str | None) -> list["InFlight.Ticket"]:
        return [t for t in self.inside if t.route == route and not t.running]

    def predict(self, route: str, items: int = 1, now: float | None = None) -> float | None:
        """The latency a request of ``route`` with ``items`` inputs admitted now is expected to have (None: its
        route is new): what is left of its route's running batch, then the next batch with its route's waiting
        requests, plus ``share`` x the work of the other routes, running or admitted (their batches run on the
        same processors: on a CPU, where ``share`` is about 1, a classification running beside an embedding
        slows it by about its own cost; on a GPU, about 0, they overlap)."""
        if route not in self.cost:
            return None
        now = self.clock() if now is None else now
        inputs = items + sum(t.items for t in self._waiting(route))
        own = max(self._busy_until.get(route, now) - now, 0.0) + self.batch_seconds(route, inputs)
        others = 0.0
        for other in {t.route for t in self.inside if t.route != route}:
            waiting = sum(t.items for t in self._waiting(other))
            others += max(self._busy_until.get(other, now) - now, 0.0)
            if waiting and other in self.cost:
                others += self.batch_seconds(other, waiting)
        return own + min(max(self.share, 0.0), 1.0) * others

    def _fits(self, route: str | None, items: int, now: float) -> bool:
        if self.ceiling and self.count >= self.ceiling:
            return False
        if not self.tolerance or not self.inside:
            return True
        if route is None:
            return False
        expected = self.predict(route, items, now)
        if expected is None:  # a new kind: alone in its batch, to learn what that costs
            return not any(t.route == route for t in self.inside)
        within = self.tolerance * self.cost[route]
        # the requests already waiting share that next batch: they would be done when this one is
        return expected <= within and all(now - t.start + expected <= within for t in self._waiting(route))

    @property
    def full(self) -> bool:
        """No place left: the next one-input request of any route seen so far would be shed."""
        now = self.clock()
        return bool(self.ceiling) and not any(self._fits(r, 1, now) for r in (self.cost or [None]))

    def enter(self, route: str | None = None, items: int = 1) -> "InFlight.Ticket | None":
        """A ticket for a request of ``route`` admitted now (give it back to ``leave``), or None: shed it."""
        now = self.clock()
        if not self._fits(route, items, now):
            self.shed += 1
            return None
        ticket = InFlight.Ticket(route, items, now)
        self.inside.append(ticket)
        self.admitted += 1
        return ticket

    def leave(self, ticket: "InFlight.Ticket") -> None:
        self.inside.remove(ticket)

    def batch_started(self, route: str, inputs: int) -> None:
        """A batch of ``inputs`` of ``route`` began: the oldest waiting requests of the route are in it."""
        left = inputs
        for ticket in self._waiting(route):
            if left <= 0:
                break
            ticket.running, left = True, left - ticket.items
        if route in self.cost:
            self._busy_until[route] = self.clock() + self.batch_seconds(route, inputs)

    def batch_done(self, route: str, inputs: int, seconds: float) -> None:
        """A batch of ``inputs`` of ``route`` took ``seconds``: what a batch costs is learnt from it."""
        self._busy_until.pop(route, None)
        if not self.tolerance or inputs < 1:
            return
        cost = self.cost.get(route)
        if inputs == 1:
            self.cost[route] = seconds if cost is None else cost + self.LEARN * (seconds - cost)
        elif cost is not None:
            sample = min(max((seconds / cost - 1.0) / (inputs - 1), 0.0), 1.5)
            self._shared += 1
            self.share += max(self.LEARN, 1.0 / self._shared) * (sample - self.share)


IN_FLIGHT = InFlight(0)

DEFAULT_LATENCY_TOLERANCE = 1.5
"""``latency_tolerance``: each backbone replica admits a request (below its share of ``max_in_flight``) only when
its predicted latency is at most this many times its kind's usual latency alone (0: only the fixed bound at
max_in_flight, kept by the ingress)."""


class Shed:
    """What a backbone replica answers instead of running a request beyond its admission bound (a value, not an
    exception: shedding half the requests under overload must not write a stack trace for each)."""

    def __init__(self, inside: int, wait_s: float = 0.0) -> None:
        self.inside = inside
        self.wait_s = wait_s


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
