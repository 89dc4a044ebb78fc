"""Serving under sustained overload and replica faults, over real HTTP to a local Ray Serve app with API keys on.

Phases, all in one run against the same app (an IR and an AD checkpoint on one backbone):

1. unloaded: one client, one request at a time, alternating /v1/embeddings and /v1/classify: p50/p99 per route;
2. capacity: closed loop, ``--clients`` concurrent clients for ``--capacity-s`` (each waits Retry-After when shed):
   answered requests per second and p50/p99 at capacity;
3. soak: open loop, Poisson arrivals at ``--overload`` x capacity for ``--minutes``: what is accepted (200), what
   is shed (503 with Retry-After in OpenAI's error shape) and how fast a shed answer comes, p50/p99 of the
   accepted requests per route and per 30-s window, and the RSS of the HTTP proxy, the ingress replica and the
   backbone replica every 5 s (growth from minute 2 to the end);
4. faults (``--fault-minutes``): open loop at ``--fault-load`` x capacity; the backbone replica, then the ingress
   replica, get SIGKILL by pid: every request ends 200 or with a clear 503/5xx in OpenAI's shape, none hangs past
   the app's request_timeout_s, and the errors' share of the run is counted.

    python benchmarks/serve_soak.py --ir runs/demo --ad runs/demo_ad --minutes 10 --out runs/serve_soak

Writes ``summary.json`` and ``soak.png`` (latency, throughput and RSS over time) to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from skr_ray.local_cluster import free_port

log = logging.getLogger("serve_soak")

API_KEY = "skr-soak-key"
REQUEST_TIMEOUT_S = 30.0
"""The app's request_timeout_s in this run: a backbone call answers 504 after it. A client waits 2 x this long
before it counts a request as hung."""

PROCESSES = {"proxy": "SERVE_PROXY_ACTOR", "ingress": "#Api#", "backbone": "#SKRBackbone#"}
"""Named actors of this run's Serve instance: SERVE_PROXY_ACTOR-..., SERVE_REPLICA::skr#Api#..., ...#SKRBackbone#..."""


@dataclass
class Outcome:
    route: str
    start: float  # seconds since the phase began
    latency: float
    status: int  # 0: no answer (connection error or client timeout)
    retry_after: str | None
    shape_ok: bool  # a non-200 answer in OpenAI's error shape
    code: str


def _pct(values: list[float], q: float) -> float:
    """The q-quantile of ``values`` as one of them (nearest rank); nan for none."""
    import numpy as np

    return float(np.percentile(values, 100 * q, method="nearest")) if len(values) else float("nan")


def _payloads() -> dict[str, list[dict]]:
    from skr_ray.tasks.ad.pairs import read_eval_pairs
    from skr_ray.corpus import demo_dir

    texts = [json.loads(line)["text"] for line in (demo_dir() / "corpus.jsonl").read_text().splitlines()]
    pairs = read_eval_pairs("demo", 4000)
    return {"/v1/embeddings": [{"model": "ir", "input": t[:600]} for t in texts],
            "/v1/classify": [{"model": "ad", "query": p.query, "passage": p.passage[:600]} for p in pairs]}


class Client:
    """One aiohttp session shared by every request of a phase (a connection pool as a load balancer keeps)."""

    def __init__(self, url: str, payloads: dict[str, list[dict]]) -> None:
        self.url = url
        self.payloads = payloads
        self.rng = random.Random(0)

    async def one(self, session, route: str, t0: float) -> Outcome:
        import aiohttp

        body = self.rng.choice(self.payloads[route])
        start = time.perf_counter()
        try:
            async with session.post(self.url + route, json=body,
                                    timeout=aiohttp.ClientTimeout(total=2 * REQUEST_TIMEOUT_S)) as r:
                status, retry = r.status, r.headers.get("Retry-After")
                try:
                    data = await r.json(content_type=None)
                except Exception:  # noqa: BLE001 - a body that is not JSON fails the shape check
                    data = None
        except asyncio.TimeoutError:
            return Outcome(route, start - t0, time.perf_counter() - start, 0, None, False, "client_timeout")
        except aiohttp.ClientError as exc:
            return Outcome(route, start - t0, time.perf_counter() - start, 0, None, False, type(exc).__name__)
        latency = time.perf_counter() - start
        if status == 200:
            return Outcome(route, start - t0, latency, status, retry, True, "ok")
        err = data.get("error") if isinstance(data, dict) else None
        ok = isinstance(err, dict) and bool(err.get("message")) and {"type", "code"} <= set(err)
        return Outcome(route, start - t0, latency, status, retry, ok, str(err.get("code")) if ok else "bad_shape")


def _session():
    import aiohttp

    return aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"},
                                 connector=aiohttp.TCPConnector(limit=0))


ROUTES = ("/v1/embeddings", "/v1/classify")


async def unloaded(client: Client, n: int) -> list[Outcome]:
    async with _session() as s:
        t0 = time.perf_counter()
        return [await client.one(s, ROUTES[i % 2], t0) for i in range(n)]


async def closed_loop(client: Client, clients: int, seconds: float) -> tuple[list[Outcome], float]:
    out: list[Outcome] = []
    async with _session() as s:
        t0 = time.perf_counter()

        async def worker(i: int) -> None:
            k = i
            while time.perf_counter() - t0 < seconds:
                o = await client.one(s, ROUTES[k % 2], t0)
                out.append(o)
                if o.retry_after:  # a shed answer: wait as told, as the OpenAI client does, instead of spinning
                    await asyncio.sleep(float(o.retry_after))
                k += 1

        await asyncio.gather(*(worker(i) for i in range(clients)))
        return out, time.perf_counter() - t0


async def open_loop(client: Client, rate: float, seconds: float, on_tick=None) -> list[Outcome]:
    """Poisson arrivals at ``rate`` per second regardless of how fast answers come (an open loop: what a
    population of independent users does), alternating the routes."""
    out: list[Outcome] = []
    rng = random.Random(1)
    tasks = set()
    async with _session() as s:
        t0 = time.perf_counter()
        nxt, k = 0.0, 0
        while nxt < seconds:
            delay = t0 + nxt - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if on_tick:
                on_tick(time.perf_counter() - t0)
            task = asyncio.ensure_future(client.one(s, ROUTES[k % 2], t0))
            task.add_done_callback(lambda t: out.append(t.result()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            k += 1
            nxt += rng.expovariate(rate)
        if tasks:
            await asyncio.wait(tasks)
    return out


def _pids(marker: str) -> list[int]:
    """Pids of this Ray cluster's live Serve actors whose name holds ``marker`` (each actor asked for its own
    pid, so another Ray cluster on the machine is never touched)."""
    import psutil
    import ray

    pids = []
    for a in ray.util.list_named_actors(all_namespaces=True):
        if a["name"].startswith(("SERVE_REPLICA::", "SERVE_PROXY")) and marker in a["name"]:
            try:
                actor = ray.get_actor(a["name"], namespace=a["namespace"])
                pid = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=10)
            except Exception:  # noqa: BLE001 - one being stopped or started
                continue
            if psutil.pid_exists(pid):
                pids.append(pid)
    return pids


def _find(marker: str) -> int | None:
    pids = _pids(marker)
    return pids[0] if pids else None


class RssSampler(threading.Thread):
    def __init__(self, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.every, self.samples, self.stop = every, [], threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            row = {"t": time.perf_counter() - self.t0}
            for name, marker in PROCESSES.items():  # the sum over replicas (two ingress replicas by default)
                try:
                    row[name] = sum(psutil.Process(pid).memory_info().rss for pid in _pids(marker)) / 2**20 or None
                except psutil.Error:
                    row[name] = None
            row["driver"] = psutil.Process().memory_info().rss / 2**20
            self.samples.append(row)
            self.stop.wait(self.every)


def summarize(outcomes: list[Outcome], seconds: float) -> dict:
    ok = [o for o in outcomes if o.status == 200]
    shed = [o for o in outcomes if o.status == 503 and o.code == "overloaded"]
    other = [o for o in outcomes if o.status != 200 and o not in shed]
    res = {"requests": len(outcomes), "ok": len(ok), "shed": len(shed), "errors": len(other),
           "answered_per_s": len(ok) / seconds, "offered_per_s": len(outcomes) / seconds,
           "shed_share": len(shed) / max(len(outcomes), 1), "error_share": len(other) / max(len(outcomes), 1),
           "error_codes": {}, "hung": sum(1 for o in outcomes if o.code == "client_timeout"),
           "non_200_without_openai_shape": sum(1 for o in outcomes if o.status != 200 and not o.shape_ok),
           "503_without_retry_after": sum(1 for o in outcomes if o.status == 503 and not o.retry_after),
           "max_latency_s": max((o.latency for o in outcomes), default=float("nan"))}
    for o in other:
        key = f"{o.status} {o.code}"
        res["error_codes"][key] = res["error_codes"].get(key, 0) + 1
    if shed:
        res["shed_p50_s"], res["shed_p99_s"] = statistics.median([o.latency for o in shed]), _pct([o.latency for o in shed], 0.99)
    for route in ROUTES:
        lat = [o.latency for o in ok if o.route == route]
        res[route] = {"ok": len(lat), "p50_s": statistics.median(lat) if lat else float("nan"), "p99_s": _pct(lat, 0.99)}
    return res


def windows(outcomes: list[Outcome], width: float) -> list[dict]:
    rows = []
    end = max((o.start for o in outcomes), default=0.0)
    t = 0.0
    while t <= end:
        part = [o for o in outcomes if t <= o.start < t + width]
        ok = [o.latency for o in part if o.status == 200]
        rows.append({"t": t, "offered_per_s": len(part) / width, "ok_per_s": len(ok) / width,
                     "shed_per_s": sum(o.status == 503 for o in part) / width,
                     "errors": sum(o.status not in (200, 503) for o in part),
                     "p50_s": statistics.median(ok) if ok else None, "p99_s": _pct(ok, 0.99) if ok else None})
        t += width
    return rows


def growth(samples: list[dict], name: str, after_s: float) -> dict:
    vals = [(s["t"], s[name]) for s in samples if s.get(name)]
    late = [v for t, v in vals if t >= after_s]
    if len(late) < 2:
        return {}
    return {"at_minute_2_mb": late[0], "at_end_mb": late[-1], "max_mb": max(late),
            "growth": late[-1] / late[0] - 1.0}


def plot(path: Path, soak_windows: list[dict], rss: list[dict], capacity: float, unloaded_p50: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    t = [w["t"] / 60 for w in soak_windows]
    axes[0].plot(t, [w["offered_per_s"] for w in soak_windows], label="offered")
    axes[0].plot(t, [w["ok_per_s"] for w in soak_windows], label="answered 200")
    axes[0].plot(t, [w["shed_per_s"] for w in soak_windows], label="shed 503")
    axes[0].axhline(capacity, color="grey", ls="--", label="capacity (closed loop)")
    axes[0].set(xlabel="minute", ylabel="requests / s", title="throughput under overload")
    axes[0].legend(fontsize=8)
    axes[1].plot(t, [w["p50_s"] for w in soak_windows], label="p50 accepted")
    axes[1].plot(t, [w["p99_s"] for w in soak_windows], label="p99 accepted")
    axes[1].axhline(unloaded_p50, color="grey", ls="--", label="p50 unloaded")
    axes[1].set(xlabel="minute", ylabel="seconds", title="latency of accepted requests")
    axes[1].legend(fontsize=8)
    for name in ("proxy", "ingress", "backbone"):
        pts = [(s["t"] / 60, s[name]) for s in rss if s.get(name)]
        axes[2].plot([p[0] for p in pts], [p[1] for p in pts], label=name)
    axes[2].set(xlabel="minute", ylabel="RSS (MiB)", title="process memory")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def fault_run(client: Client, rate: float, seconds: float) -> tuple[list[Outcome], list[dict]]:
    """Open loop at ``rate``; SIGKILL the backbone replica at 1/3 of the run and the ingress replica at 2/3."""
    kills: list[dict] = []
    plan = [(seconds / 3, "backbone"), (2 * seconds / 3, "ingress")]

    def tick(now: float) -> None:
        if plan and now >= plan[0][0]:
            _, name = plan.pop(0)
            pid = _find(PROCESSES[name])
            if pid:
                os.kill(pid, signal.SIGKILL)
            kills.append({"at_s": now, "process": name, "pid": pid})
            log.info("SIGKILL %s replica (pid %s) at %.0f s", name, pid, now)

    return asyncio.run(open_loop(client, rate, seconds, tick)), kills


def main() -> None:
    import ray
    from ray import serve

    from skr_ray.serve.app import build_app

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ir", required=True, help="IR checkpoint or run folder")
    ap.add_argument("--ad", required=True, help="AD checkpoint or run folder (same base model)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--overload", type=float, default=2.0, help="soak arrival rate / measured capacity")
    ap.add_argument("--clients", type=int, default=32, help="closed-loop clients for the capacity phase")
    ap.add_argument("--capacity-s", type=float, default=45.0)
    ap.add_argument("--unloaded", type=int, default=240,
                    help="requests of the one-client phase (120 per route: a p99 of 30 samples is their maximum)")
    ap.add_argument("--fault-minutes", type=float, default=3.0, help="0: skip the replica-kill phase")
    ap.add_argument("--fault-load", type=float, default=0.8, help="fault phase arrival rate / capacity")
    ap.add_argument("--max-in-flight", type=int, default=None, help="the app's max_in_flight (default: its own)")
    ap.add_argument("--out", default="runs/serve_soak")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("ray").setLevel(logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    os.environ["SKR_SOAK_KEYS"] = API_KEY
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    options = {"models": {"ir": args.ir, "ad": args.ad}, "auth": {"api_keys_env": "SKR_SOAK_KEYS"},
               "request_timeout_s": REQUEST_TIMEOUT_S}
    if args.max_in_flight is not None:
        options["max_in_flight"] = args.max_in_flight
    serve.run(build_app(options), name="skr", route_prefix="/")
    from skr_ray.serve import app as app_module

    client = Client(f"http://127.0.0.1:{port}", _payloads())
    asyncio.run(unloaded(client, 6))  # adapters loaded, tokenizers in the ingress, first batches compiled
    result: dict = {"cores": os.cpu_count(), "routes": list(ROUTES), "request_timeout_s": REQUEST_TIMEOUT_S,
                    "max_in_flight": args.max_in_flight or app_module.default_max_in_flight({}, {}, 1)}

    base = asyncio.run(unloaded(client, args.unloaded))
    result["unloaded"] = summarize(base, sum(o.latency for o in base))
    log.info("unloaded: %s", {r: result["unloaded"][r] for r in ROUTES})

    cap, elapsed = asyncio.run(closed_loop(client, args.clients, args.capacity_s))
    result["capacity"] = summarize(cap, elapsed)
    capacity = result["capacity"]["answered_per_s"]
    log.info("capacity: %.2f requests/s answered with %d clients (%d shed)", capacity, args.clients,
             result["capacity"]["shed"])

    sampler = RssSampler()
    sampler.start()
    seconds = 60 * args.minutes
    soak = asyncio.run(open_loop(client, args.overload * capacity, seconds))
    sampler.stop.set()
    sampler.join()
    result["soak"] = summarize(soak, seconds) | {"rate_per_s": args.overload * capacity, "minutes": args.minutes}
    result["soak"]["rss_growth_from_minute_2"] = {n: growth(sampler.samples, n, 120.0) for n in PROCESSES}
    soak_windows = windows(soak, 30.0)
    for route in ROUTES:
        result["soak"][route]["p50_vs_unloaded"] = result["soak"][route]["p50_s"] / result["unloaded"][route]["p50_s"]
        result["soak"][route]["p99_vs_unloaded"] = result["soak"][route]["p99_s"] / result["unloaded"][route]["p99_s"]
        result["soak"][route]["p50_vs_capacity"] = result["soak"][route]["p50_s"] / result["capacity"][route]["p50_s"]
        result["soak"][route]["p99_vs_capacity"] = result["soak"][route]["p99_s"] / result["capacity"][route]["p99_s"]
    log.info("soak: %s", {k: v for k, v in result["soak"].items() if k != "error_codes"})

    if args.fault_minutes > 0:
        faults, kills = fault_run(client, args.fault_load * capacity, 60 * args.fault_minutes)
        result["faults"] = summarize(faults, 60 * args.fault_minutes) | {"kills": kills,
                                                                         "rate_per_s": args.fault_load * capacity}
        result["faults"]["windows"] = windows(faults, 10.0)
        log.info("faults: %s", {k: v for k, v in result["faults"].items() if k != "windows"})

    result["soak_windows"] = soak_windows
    result["rss"] = sampler.samples
    (out / "summary.json").write_text(json.dumps(result, indent=1))
    plot(out / "soak.png", soak_windows, sampler.samples, capacity,
         statistics.median([o.latency for o in base if o.status == 200]))
    serve.shutdown()
    print(json.dumps({k: v for k, v in result.items() if k not in ("rss", "soak_windows")}, indent=1))


if __name__ == "__main__":
    main()
