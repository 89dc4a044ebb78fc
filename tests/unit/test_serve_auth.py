"""Serve API keys: where they come from, what is refused, and what `skr serve` says when they are off."""

import hashlib

from collections import defaultdict

import pytest

from skr_ray.serve.app import _key_ok, load_api_keys


def _digest(key):
    return hashlib.sha256(key.encode()).hexdigest()


def test_keys_from_an_environment_variable_or_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SKR_TEST_KEYS", "k1, k2,")
    assert load_api_keys({"api_keys_env": "SKR_TEST_KEYS"}) == sorted([_digest("k1"), _digest("k2")])
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nk3\n\nk1\n")
    both = load_api_keys({"api_keys_env": "SKR_TEST_KEYS", "api_keys_file": str(keys)})
    assert both == sorted({_digest(k) for k in ("k1", "k2", "k3")})  # digests only: no key travels in the app


def test_keys_from_skr_api_keys_when_the_config_names_no_source(monkeypatch):
    monkeypatch.setenv("SKR_API_KEYS", "sk-quick-start")  # the README's quick start: export, then skr serve
    assert load_api_keys({}) == [_digest("sk-quick-start")]
    assert load_api_keys(None) == [_digest("sk-quick-start")]
    assert load_api_keys({"disabled": True}) is None  # an explicit choice wins over the environment


def test_no_keys_is_refused_unless_disabled_explicitly(tmp_path, monkeypatch):
    monkeypatch.delenv("SKR_API_KEYS", raising=False)
    with pytest.raises(ValueError, match="Serve needs API keys"):
        load_api_keys({})
    monkeypatch.setenv("EMPTY_KEYS", " , ")
    with pytest.raises(ValueError, match="Serve needs API keys"):
        load_api_keys({"api_keys_env": "EMPTY_KEYS"})
    with pytest.raises(ValueError, match="NOT_SET_ANYWHERE is not set"):
        load_api_keys({"api_keys_env": "NOT_SET_ANYWHERE"})
    with pytest.raises(ValueError, match="does not exist"):
        load_api_keys({"api_keys_file": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="never in the config"):
        load_api_keys({"api_keys": ["sk-live-123"]})
    with pytest.raises(ValueError, match="choose one"):
        load_api_keys({"disabled": True, "api_keys_file": str(tmp_path / "keys")})
    assert load_api_keys({"disabled": True}) is None


def test_bearer_header_check():
    digests = [_digest("good")]
    assert _key_ok("Bearer good", digests)
    assert not _key_ok("Bearer bad", digests) and not _key_ok("good", digests) and not _key_ok(None, digests)
    assert not _key_ok("Bearer ", digests)


def test_skr_serve_refuses_to_start_without_keys(capsys):
    from skr_ray.serve.cli import serve_main

    assert serve_main(None, [], 8000) == 1
    assert "Serve needs API keys" in capsys.readouterr().err


def _png(width, height, mode="L"):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, "PNG")
    return buf.getvalue()


def test_image_allow_list_and_pixel_cap_from_the_header():
    import io

    from PIL import Image

    from skr_ray.models.vision import decode_image

    assert decode_image(_png(8, 6)).size == (8, 6)
    with pytest.raises(ValueError, match="4000 x 3000 = 12000000 pixels; the limit is 1000000"):
        decode_image(_png(4000, 3000), max_pixels=1_000_000)
    gif = io.BytesIO()
    Image.new("L", (4, 4)).save(gif, "GIF")
    with pytest.raises(ValueError, match="could not be decoded as PNG, JPEG, WEBP"):
        decode_image(gif.getvalue())
    with pytest.raises(ValueError, match="decompression bomb"):  # Pillow's own limit, below ours
        decode_image(_png(13000, 13000), max_pixels=10**9)


def test_a_backbone_call_past_the_timeout_is_a_504():
    import asyncio

    from fastapi import HTTPException

    from skr_ray.serve.app import Api

    api = object.__new__(Api.func_or_class)  # the ingress class without a Serve replica around it
    api.request_timeout_s = 0.05

    async def slow():
        await asyncio.sleep(5)

    with pytest.raises(HTTPException) as err:
        asyncio.run(api._bounded(slow(), "embed", "ir-a"))
    assert err.value.status_code == 504 and err.value.detail["code"] == "timeout"
    assert asyncio.run(api._bounded(asyncio.sleep(0, result=[1.0]), "embed", "ir-a")) == [1.0]


@pytest.fixture()
def guarded():
    """The ingress's FastAPI app (its middleware, before any route) with two keys and a limit of 3 per minute."""
    from fastapi.testclient import TestClient

    from skr_ray.serve import guard
    from skr_ray.serve.app import api

    saved = dict(guard.CONFIG), guard.LIMITER
    guard.configure([_digest("k1"), _digest("k2")], 1024, requests_per_minute=3)
    yield TestClient(api), guard
    guard.CONFIG.update(saved[0])
    guard.LIMITER = saved[1]


def test_a_key_past_its_rate_limit_gets_429_with_retry_after_and_other_keys_go_on(guarded, caplog):
    client, guard = guarded
    k1, k2 = {"Authorization": "Bearer k1"}, {"Authorization": "Bearer k2"}
    with caplog.at_level("INFO", logger="skr_ray.serve.access"):
        assert [client.get("/v1/none", headers=k1).status_code for _ in range(3)] == [404, 404, 404]
        limited = client.get("/v1/none", headers=k1)
        assert client.get("/v1/none", headers=k2).status_code == 404  # the limit is per key
        assert client.get("/v1/none", headers={"Authorization": "Bearer k3"}).status_code == 401
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["error"]["code"] == "rate_limit_exceeded" and limited.json()["error"]["type"] == "requests"
    lines = [r.getMessage() for r in caplog.records if r.name == "skr_ray.serve.access"]
    assert len(lines) == 6 and f"429 key={_digest('k1')[:12]}" in lines[3] and "401 key=-" in lines[5]
    assert not any("k1 " in ln or ln.endswith("k1") for ln in lines)  # the id, never the key


def test_the_limit_is_a_sliding_minute():
    from skr_ray.serve.guard import RateLimiter

    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert limiter.admit("a") is None
    now[0] = 10.0
    assert limiter.admit("a") is None
    now[0] = 20.0
    assert limiter.admit("a") == pytest.approx(40.0)  # the first request ages out at t = 60
    assert limiter.admit("b") is None  # another key has its own window
    now[0] = 60.0
    assert limiter.admit("a") is None and limiter.admit("a") == pytest.approx(10.0)  # the second ages out at 70
    assert RateLimiter(0).admit("a") is None  # 0: no limit


def test_rate_limit_option_is_checked():
    from skr_ray.serve.app import requests_per_minute

    assert requests_per_minute({"api_keys_env": "X", "requests_per_minute": 120}) == 120
    assert requests_per_minute(None) == 0
    for bad in (-1, 1.5, "10", True):
        with pytest.raises(ValueError, match="requests_per_minute"):
            requests_per_minute({"requests_per_minute": bad})
    assert load_api_keys({"disabled": True, "requests_per_minute": 5}) is None  # not an unknown option


def test_the_openai_client_retries_our_429_and_503_answers():
    """The answers carry what the OpenAI client's retry logic reads (status, Retry-After): with max_retries it
    gets through a rate-limited key and a replica that is briefly unavailable; with none it sees the error."""
    import openai
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from skr_ray.serve import app as serve_app
    from skr_ray.serve import guard

    calls = []
    demo = FastAPI()
    demo.middleware("http")(serve_app._guard)
    demo.exception_handler(serve_app.StarletteHTTPException)(serve_app._http_error)

    @demo.post("/v1/embeddings")
    async def embeddings() -> dict:
        calls.append(1)
        if len(calls) == 2:  # the second admitted call finds the replica gone
            raise serve_app._fail(503, "model replica failed (ActorDiedError)", "replica_error")
        return {"object": "list", "model": "m", "usage": {"prompt_tokens": 1, "total_tokens": 1},
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.5]}]}

    saved = dict(guard.CONFIG), guard.LIMITER
    # the limiter's clock at each request: 0 admitted; 59.5 -> 429 (Retry-After 1); 60.5 admitted -> 503
    # (Retry-After 1); 121 admitted -> 200; then 121.5 -> 429 for a client that does not retry
    now = iter([0.0, 59.5, 60.5, 121.0, 121.5])
    guard.configure([_digest("k1")], 1024, requests_per_minute=1)
    guard.LIMITER.clock = lambda: next(now)
    try:
        with TestClient(demo) as http:
            client = openai.OpenAI(base_url="http://testserver/v1", api_key="k1", http_client=http, max_retries=3)
            assert client.embeddings.create(model="m", input="a").data[0].embedding == [0.5, 0.5]
            assert len(calls) == 1
            assert client.embeddings.create(model="m", input="a").data[0].embedding == [0.5, 0.5]
            assert len(calls) == 3  # the 503 reached the route and was retried; the 429 never reached it
            bare = openai.OpenAI(base_url="http://testserver/v1", api_key="k1", http_client=http, max_retries=0)
            with pytest.raises(openai.RateLimitError, match="rate limit of 1 requests per minute"):
                bare.embeddings.create(model="m", input="a")
    finally:
        guard.CONFIG.update(saved[0])
        guard.LIMITER = saved[1]


def test_admission_bound_defaults_and_counts():
    """max_in_flight's default: two full batches per backbone replica at its most replicas, per base model; the
    bound sheds the request beyond it and frees a place when one leaves."""
    from skr_ray.serve.app import default_max_in_flight
    from skr_ray.serve.guard import InFlight

    assert default_max_in_flight({}, {}, 1) == 32
    assert default_max_in_flight({"max_batch_size": 8}, {"autoscaling_config": {"max_replicas": 4}}, 2) == 128
    assert default_max_in_flight({"max_batch_size": 4}, {"num_replicas": 3}, 1) == 24
    bound = InFlight(2)
    first, second = bound.enter(), bound.enter()
    assert first and second and bound.enter() is None
    bound.leave(first)
    assert bound.enter() and (bound.admitted, bound.shed, bound.count) == (3, 1, 2)
    unbounded = InFlight(0)
    assert all(unbounded.enter() for _ in range(1000))
    with pytest.raises(ValueError, match="max_in_flight"):
        guard_module().configure(None, 1024, max_in_flight=-1)


class _Replica:
    """A simulated model replica behind an InFlight bound, on a simulated clock: requests arrive every
    ``gap`` seconds; a batch takes whatever is admitted and waiting when the model is free and costs
    ``cost(n)`` for n requests. ``run`` answers each admitted request's latency and the batch sizes."""

    def __init__(self, cost, gap: float, ceiling: int = 32) -> None:
        from skr_ray.serve.guard import InFlight

        self.now = 0.0
        self.bound = InFlight(ceiling, tolerance=1.5, clock=lambda: self.now)
        self.cost, self.gap = cost, gap

    def run(self, requests: int, route: str = "embed") -> tuple[list[float], list[int]]:
        waiting, latencies, sizes, running, free_at = [], [], [], [], 0.0
        arrivals = [i * self.gap for i in range(requests)]
        while arrivals or waiting or running:
            if running and (not arrivals or free_at <= arrivals[0]):  # the batch ends first
                self.now = free_at
                self.bound.batch_done(route, len(running), self.cost(len(running)))
                for ticket, arrived in running:
                    latencies.append(self.now - arrived)
                    self.bound.leave(ticket)
                running = []
            elif arrivals:
                self.now = arrivals.pop(0)
                ticket = self.bound.enter(route)
                if ticket is not None:
                    waiting.append((ticket, self.now))
            if not running and waiting:
                running, waiting = waiting, []
                sizes.append(len(running))
                self.bound.batch_started(route, len(running))
                free_at = self.now + self.cost(len(running))
        return latencies, sizes


def test_admission_by_predicted_latency_on_cpu_and_gpu_like_replicas():
    """On a CPU-like replica (a batch costs its parts) under 3x overload, no admitted request waits more than
    the tolerance allows, yet the model is kept busy (the next request is admitted while the running one is
    finishing). On a GPU-like one (a batch costs one request) requests ride shared batches, still within the
    tolerance. A fixed bound ignores latencies."""
    from skr_ray.serve.guard import InFlight

    cpu = _Replica(lambda n: 0.1 * n, gap=0.033)
    latencies, sizes = cpu.run(3000)
    assert max(sizes[:4]) == 2 and max(sizes[4:]) == 1  # the first shared batch taught the bound what it costs
    assert cpu.bound.share == pytest.approx(1.0) and cpu.bound.cost["embed"] == pytest.approx(0.1)
    assert max(latencies[8:]) <= 0.1 * 1.5 + 1e-9  # within the tolerance, every one after those
    cpu_rate = len(latencies) / cpu.now
    assert 0.1 * cpu_rate > 0.95  # busy: the next request was waiting when a batch ended
    assert cpu.bound.shed > 0.6 * 3000 and cpu.bound.count == 0 and not cpu.bound.may_share("embed")

    gpu = _Replica(lambda n: 0.1, gap=0.001)
    latencies, sizes = gpu.run(3000)
    assert max(latencies) <= 0.1 * 1.5 + 1e-9 and gpu.bound.share < 0.05 and gpu.bound.may_share("embed")
    assert len(latencies) / gpu.now > 10 * cpu_rate and max(sizes) >= 30  # about the ceiling of 32

    fixed = InFlight(4)  # no tolerance: the ceiling, whatever the latencies
    tickets = [fixed.enter("embed") for _ in range(4)]
    assert all(tickets) and fixed.enter("embed") is None and fixed.limit == 4
    for ticket in tickets:
        fixed.leave(ticket)
    assert fixed.count == 0 and fixed.enter("embed") is not None
    with pytest.raises(ValueError, match="latency_tolerance"):
        guard_module().check_admission(4, 0.5)


def test_the_other_routes_running_work_counts_on_a_cpu_not_on_a_gpu():
    """Routes share the replica's processors: on a CPU-like replica (share 1) a classification is predicted to
    wait for the embedding batch that is running, and is admitted only once that one is nearly done; on a
    GPU-like one (share 0) the two overlap."""
    from skr_ray.serve.guard import InFlight

    now = [0.0]
    for share, admitted_at_once in ((1.0, False), (0.0, True)):
        now[0] = 0.0
        bound = InFlight(32, tolerance=1.5, clock=lambda: now[0])
        bound.cost, bound.share, bound._shared = {"embed": 0.1, "classify": 0.1}, share, 10
        assert bound.enter("embed") is not None
        bound.batch_started("embed", 1)
        assert bound.predict("classify") == pytest.approx(0.1 + share * 0.1)
        assert (bound.enter("classify") is not None) == admitted_at_once
        if not admitted_at_once:
            now[0] = 0.07  # 0.03 s of the embedding left: 0.13 s predicted, within 1.5 x 0.1
            assert bound.enter("classify") is not None


def test_backbone_replica_sheds_beyond_its_adaptive_bound():
    """The adaptive bound lives in the backbone replica, which sees every request its model runs whichever
    ingress replica sent it, and every batch: a request predicted past the tolerance gets guard.Shed at once
    (the ingress answers 503), and each batch's time teaches the bound what a batch costs."""
    import asyncio
    import time as clock

    from skr_ray.serve.backbone import AdaptiveBatchWait, SKRBackbone
    from skr_ray.serve.guard import InFlight, Shed

    replica = object.__new__(SKRBackbone.func_or_class)
    replica.admission = InFlight(8, tolerance=1.5)
    replica.stats = defaultdict(lambda: {"batches": 0, "items": 0, "model_s": 0.0})
    replica.waits = {"embed": AdaptiveBatchWait(0.01, 0.2)}
    replica.batched = {"embed": type("Batched", (), {"set_batch_wait_timeout_s": lambda self, s: None})()}
    ran = []

    def model(model_id, rows):  # a CPU-like model: a batch costs its rows one by one
        clock.sleep(0.05 * len(rows))
        ran.extend(r[0] for r in rows)
        return [2 * r[0] for r in rows]

    async def work(x):  # one request, a batch of its own
        return (await replica._timed("embed", model, [("m", x)]))[0]

    async def burst():
        return await asyncio.gather(*(replica._admitted("embed", work, i) for i in range(3)))

    first = asyncio.run(burst())  # a new route: its first request alone, to learn what a batch costs
    assert first[0] == 0 and all(isinstance(a, Shed) and a.inside == 1 for a in first[1:]) and ran == [0]
    assert replica.admission.count == 0 and replica.admission.cost["embed"] == pytest.approx(0.05, rel=0.5)
    second = asyncio.run(burst())  # all three at once: the second would wait for the whole first one
    assert second[0] == 0 and all(isinstance(a, Shed) and a.wait_s > 0.075 for a in second[1:])
    assert replica.stats["embed"]["batches"] == 2


def guard_module():
    from skr_ray.serve import guard

    return guard


def test_backbone_cpus_fit_the_cluster(monkeypatch):
    """By default each backbone replica takes one CPU, or its even share of what the cluster has beside the
    ingress replicas (two base models on 2 CPUs: 0.9 each); a setting the cluster cannot hold is refused with
    the numbers instead of a Serve app that waits for CPUs forever."""
    from skr_ray.serve import app

    monkeypatch.setattr(app, "_cluster_cpus", lambda: 2.0)
    assert app._default_backbone_cpus(1, 0.2) == 1.0
    assert app._default_backbone_cpus(2, 0.2) == 0.9
    ingress = {"ray_actor_options": {"num_cpus": 0.1}, "num_replicas": 2}
    app._check_cpus({"ray_actor_options": {"num_cpus": 0.9}}, ingress, 2)
    with pytest.raises(ValueError, match=r"needs 2.2 CPUs .* the cluster has 2"):
        app._check_cpus({"ray_actor_options": {"num_cpus": 1}}, ingress, 2)
    app._check_cpus({"ray_actor_options": {"num_cpus": 1}, "autoscaling_config": {"max_replicas": 4}}, ingress, 2)
    monkeypatch.setattr(app, "_cluster_cpus", lambda: None)  # Ray not started: nothing to fit yet
    assert app._default_backbone_cpus(2, 0.2) == 1.0
