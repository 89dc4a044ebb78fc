"""The Serve application over real HTTP on a local Ray Serve instance, with tiny SKR checkpoints."""

from __future__ import annotations

import base64
import logging
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import torch

from skr_ray.tasks.ad.prompts import IMAGE_PROMPT_VERSION
from tests.tiny import make_checkpoint
from skr_ray.local_cluster import free_port

pytestmark = pytest.mark.integration

API_KEY = "skr-test-key-1"
HTTP = requests.Session()  # every call of these tests carries the key, as an OpenAI client would
HTTP.headers["Authorization"] = f"Bearer {API_KEY}"
MAX_REQUEST_BYTES = 8 * 2**20


@pytest.fixture(scope="module")
def checkpoints(tiny_model_dir, tiny_vlm_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    return {
        "ir-a": make_checkpoint(tiny_model_dir, root / "ir-a", "ir", seed=1),
        # a run folder's checkpoint (its run folder is served, with the corpus index `skr index` builds there)
        "ir-b": make_checkpoint(tiny_model_dir, root / "ir-b" / "train" / "checkpoint", "ir", seed=2,
                                pooling="mean"),  # served as trained
        "ad-a": make_checkpoint(tiny_model_dir, root / "ad-a", "ad", seed=3, threshold=0.4),
        "od-a": make_checkpoint(tiny_vlm_dir, root / "od-a", "od", seed=4),  # another base model: 2nd backbone
        "ad-img": make_checkpoint(tiny_vlm_dir, root / "ad-img", "ad", seed=5, prompt=IMAGE_PROMPT_VERSION),
        "ad-sft": make_checkpoint(tiny_model_dir, root / "ad-sft", "ad", seed=6, objective="sft"),
    }


CORPUS = [{"_id": f"d{i}", "text": f"Passage {i}: revenue of segment {i % 5} grew by {3 * i} percent in {2000 + i}."}
          for i in range(40)]


@pytest.fixture(scope="module")
def indexed_run(ray_local, checkpoints, tmp_path_factory):
    """ir-b's run folder after the real ``index`` stage over a small corpus (Ray Data actors, faiss)."""
    import json

    from skr_ray.config import load_config
    from skr_ray.tasks.ir.index import run_index

    run = checkpoints["ir-b"].parent.parent
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in CORPUS))
    cfg = load_config(None, [f"output_dir={run}", f"index.corpus={corpus}", "evaluate.batch_size=8",
                             "index.shard_rows=8"])
    return run, cfg, run_index(cfg)


def test_index_resumes_by_shard(indexed_run):
    """A killed index run: the shards on disk are kept, a shard cut off mid-write is removed, and only the rows
    that are missing are encoded again; the index holds every row once. (Before the server starts: its
    replicas hold CPUs an encoder actor needs on the 2-CPU test cluster.)"""
    import shutil

    from skr_ray.tasks.ir.index import run_index

    run, cfg, _ = indexed_run
    copy = run.parent / "ir-b-resumed"
    shutil.copytree(run, copy)
    shards = sorted((copy / "index" / "vectors").glob("*.parquet"))
    assert len(shards) >= 2
    import pyarrow.parquet as pq

    lost = pq.read_metadata(shards[0]).num_rows
    shards[0].write_bytes(shards[0].read_bytes()[:50])  # cut off mid-write
    (copy / "index" / "_SUCCESS").unlink()
    from skr_ray.config import load_config

    resumed = run_index(load_config(None, [f"output_dir={copy}", f"index.corpus={cfg.index.corpus}",
                                           f"index.checkpoint={run / 'train' / 'checkpoint'}", "evaluate.batch_size=8",
                                           "index.shard_rows=8"]))
    assert resumed["removed_shards"] == 1 and resumed["encoded_this_run"] == lost
    assert resumed["resumed_rows"] == len(CORPUS) - lost and resumed["vectors"] == len(CORPUS)


@pytest.fixture(scope="module")
def server(ray_local, checkpoints, indexed_run, tmp_path_factory):
    from ray import serve

    from skr_ray.serve.app import build_app

    keys = tmp_path_factory.mktemp("auth") / "keys"
    keys.write_text(f"# one key per line\n{API_KEY}\nskr-test-key-2\n")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_app({
        "auth": {"api_keys_file": str(keys)},
        "max_request_bytes": MAX_REQUEST_BYTES,
        "max_input_chars": 2000,
        "max_image_pixels": 5_000_000,
        "models": {k: str(indexed_run[0] if k == "ir-b" else v) for k, v in checkpoints.items()},
        "max_adapters": 2,  # three models, room for two: exercises the LRU
        "max_input_tokens": 64,
        "max_batch_size": 8,
        "max_in_flight": 96, "latency_tolerance": 0,  # a fixed bound, 48 per ingress replica: 32 clients all get in
        "batch_wait_timeout_s": 0.005,
        "backbone": {"ray_actor_options": {"num_cpus": 0.5}},  # two backbones on the 2-CPU test cluster
    })
    serve.run(app, name="skr", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def _direct_embeddings(ckpt, texts):
    from skr_ray.models.checkpoint import load_skr_model
    from skr_ray.models.encoding import embed_texts

    skr = load_skr_model(ckpt)
    return embed_texts(skr.model, skr.tokenizer, texts, 64, skr.head, "cpu", skr.head_info["prompt"],
                       skr.head_info["pooling"]).numpy()


def test_health_and_models(server):
    health = HTTP.get(f"{server}/healthz", timeout=60).json()
    assert health["status"] == "ok" and health["models"] == ["ad-a", "ad-img", "ad-sft", "ir-a", "ir-b", "od-a"]
    assert health["backbones"] == 2  # SmolLM-style text model + the vision-language model
    models = HTTP.get(f"{server}/v1/models", timeout=60).json()
    assert models.get("object") == "list", models
    assert {m["id"]: (m["task"], m["input"]) for m in models["data"]} == {
        "ir-a": ("ir", "text"), "ir-b": ("ir", "text"), "ad-a": ("ad", "text"), "ad-img": ("ad", "image"),
        "od-a": ("od", "image"), "ad-sft": ("ad", "text")}
    assert [m["id"] for m in models["data"] if m["search"]] == ["ir-b"]  # the one served with its corpus index
    # no server path is disclosed
    assert all("/" not in str(v) for m in models["data"] for v in m.values()), models


def test_wrong_model_kind_messages(server):
    r = HTTP.post(f"{server}/v1/classify", json={"model": "ad-sft", "query": "q?", "passage": "p"}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_task"
    assert "is an SFT baseline" in r.json()["error"]["message"]
    r = HTTP.post(f"{server}/v1/embeddings", json={"model": "ad-a", "input": "x"}, timeout=60)
    assert r.json()["error"]["message"] == "model 'ad-a' is an ad model; /v1/embeddings needs an ir model"


def test_embeddings_match_the_checkpoint_and_count_tokens(server, checkpoints, tiny_model_dir):
    from transformers import AutoTokenizer

    texts = ["revenue rose in 2023", "the board approved a dividend", "debt"]
    r = HTTP.post(f"{server}/v1/embeddings", json={"model": "ir-a", "input": texts}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    got = np.asarray([d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])])
    want = _direct_embeddings(checkpoints["ir-a"], texts)
    assert got.shape == (3, 32)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    n = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    assert body["usage"] == {"prompt_tokens": n, "total_tokens": n}
    assert body["model"] == "ir-a" and body["object"] == "list"

    single = HTTP.post(f"{server}/v1/embeddings", json={"model": "ir-a", "input": texts[0]}, timeout=60).json()
    np.testing.assert_allclose(single["data"][0]["embedding"], want[0], atol=1e-4)

    b64 = HTTP.post(f"{server}/v1/embeddings",
                        json={"model": "ir-a", "input": texts, "encoding_format": "base64"}, timeout=60).json()
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in b64["data"]])
    np.testing.assert_allclose(decoded, want, atol=1e-4)

    short = HTTP.post(f"{server}/v1/embeddings",
                          json={"model": "ir-a", "input": texts, "dimensions": 8}, timeout=60).json()
    cut = np.asarray([d["embedding"] for d in short["data"]])
    np.testing.assert_allclose(cut, want[:, :8] / np.linalg.norm(want[:, :8], axis=1, keepdims=True), atol=1e-4)


def test_openai_client(server, checkpoints):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key=API_KEY)
    texts = ["revenue rose in 2023", "debt fell"]
    out = client.embeddings.create(model="ir-b", input=texts)  # the client asks for base64 by default
    got = np.asarray([d.embedding for d in out.data])
    np.testing.assert_allclose(got, _direct_embeddings(checkpoints["ir-b"], texts), atol=1e-4)
    assert out.usage.prompt_tokens > 0
    with pytest.raises(Exception) as info:
        client.embeddings.create(model="nope", input="x")
    assert getattr(info.value, "status_code", None) == 404


def test_multiplexing_two_adapters_on_one_backbone(server, checkpoints):
    text = ["revenue rose in 2023"]
    a = HTTP.post(f"{server}/v1/embeddings", json={"model": "ir-a", "input": text}, timeout=60).json()
    b = HTTP.post(f"{server}/v1/embeddings", json={"model": "ir-b", "input": text}, timeout=60).json()
    va, vb = np.asarray(a["data"][0]["embedding"]), np.asarray(b["data"][0]["embedding"])
    assert np.abs(va - vb).max() > 1e-3  # different adapters, different vectors
    np.testing.assert_allclose(vb, _direct_embeddings(checkpoints["ir-b"], text)[0], atol=1e-4)
    # third model: the LRU (2 per replica) evicts one, and the evicted one reloads correctly
    HTTP.post(f"{server}/v1/classify", json={"model": "ad-a", "query": "what rose?", "passage": "revenue rose"},
                  timeout=60).raise_for_status()
    health = HTTP.get(f"{server}/healthz", timeout=60).json()
    assert len(health["adapters_loaded_on_a_replica"]) <= 2
    again = HTTP.post(f"{server}/v1/embeddings", json={"model": "ir-a", "input": text}, timeout=60).json()
    np.testing.assert_allclose(again["data"][0]["embedding"], va, atol=1e-5)


def test_classify_matches_the_checkpoint(server, checkpoints):
    from skr_ray.models.checkpoint import load_skr_model
    from skr_ray.models.encoding import final_token_states
    from skr_ray.tasks.ad.prompts import render_prompts

    q, p = "what was revenue in 2023?", "revenue rose to 10 million in 2023"
    r = HTTP.post(f"{server}/v1/classify", json={"model": "ad-a", "query": q, "passage": p}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    skr = load_skr_model(checkpoints["ad-a"])
    enc = skr.tokenizer(render_prompts(skr.tokenizer, [q], [p], 48), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        want = torch.sigmoid(skr.head(final_token_states(skr.model, enc))).item()
    assert body["probability"] == pytest.approx(want, abs=1e-4)
    assert body["threshold"] == pytest.approx(0.4)
    assert body["label"] == int(want >= 0.4) and body["answerable"] == (want >= 0.4)


def _b64(image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def test_classify_an_image_matches_the_checkpoint(server, checkpoints):
    """Multimodal AD: a human question against a real chart (its own and another one) over HTTP."""
    from skr_ray.models.checkpoint import load_skr_model
    from skr_ray.models.vision import image_batch, image_final_states
    from skr_ray.tasks.ad.prompts import render_image_prompts
    from tests.tiny import chart

    (own, question), (other, _) = chart(0), chart(1)
    skr = load_skr_model(checkpoints["ad-img"])
    with torch.no_grad():
        batch = image_batch(skr.tokenizer, [own, other], render_image_prompts(skr.tokenizer, [question] * 2))
        want = torch.sigmoid(skr.head(image_final_states(skr.model, batch))).numpy()
    for image, p in ((own, want[0]), (other, want[1])):
        r = HTTP.post(f"{server}/v1/classify", json={"model": "ad-img", "query": question, "image": _b64(image)},
                          timeout=120)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["probability"] == pytest.approx(float(p), abs=1e-4)
        assert body["label"] == int(p >= body["threshold"])
    assert abs(want[0] - want[1]) > 1e-5  # the image reaches the head


def _direct_boxes(ckpt, pages, queries):
    from skr_ray.models.checkpoint import load_skr_model
    from skr_ray.models.vision import image_batch, image_final_states
    from skr_ray.tasks.od.prompts import render_prompts

    skr = load_skr_model(ckpt)
    batch = image_batch(skr.tokenizer, pages, render_prompts(skr.tokenizer, queries))
    with torch.no_grad():
        return skr.head(image_final_states(skr.model, batch)).numpy()


def test_detect_matches_the_checkpoint_on_real_pages(server, checkpoints):
    """A real document page over HTTP (JPEG and PNG): the box equals the checkpoint's own forward pass,
    in normalized and pixel coordinates; concurrent requests (batched on the replica) answer the same."""
    from skr_ray.tasks.od.boxes import to_pixels
    from skr_ray.tasks.od.prompts import DEFAULT_OBJECT
    from tests.tiny import docpage

    (page0, rec0), (page1, rec1) = docpage(0), docpage(1)
    want = _direct_boxes(checkpoints["od-a"], [page0, page1, page0], ["", "", "the table"])
    r = HTTP.post(f"{server}/v1/detect", json={"model": "od-a", "image": _b64(page0)}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "detection" and body["model"] == "od-a" and body["query"] == DEFAULT_OBJECT
    assert body["image"] == {"width": rec0["width"], "height": rec0["height"]}
    np.testing.assert_allclose(body["box"]["normalized"], want[0], atol=1e-4)
    assert body["box"]["pixels"] == to_pixels(body["box"]["normalized"], rec0["width"], rec0["height"])

    payloads = [{"model": "od-a", "image": "data:image/png;base64," + _b64(page1)},
                {"model": "od-a", "image": _b64(page0), "query": "the table"}] * 3
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda p: HTTP.post(f"{server}/v1/detect", json=p, timeout=120), payloads))
    assert [a.status_code for a in answers] == [200] * 6
    for i, a in enumerate(answers):
        np.testing.assert_allclose(a.json()["box"]["normalized"], want[1 if i % 2 == 0 else 2], atol=1e-4)
    assert abs(want[0] - want[2]).max() > 1e-4  # the query reaches the model

    jpeg = HTTP.post(f"{server}/v1/detect", json={"model": "od-a", "image": _b64(page0, "JPEG")}, timeout=120)
    assert jpeg.status_code == 200 and jpeg.json()["image"]["width"] == rec0["width"]


def _png() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize(
    ("route", "payload", "status", "fragment"),
    [
        ("/v1/embeddings", {"model": "nope", "input": "x"}, 404, "unknown model 'nope'"),
        ("/v1/embeddings", {"model": "ir-a", "input": []}, 400, "non-empty"),
        ("/v1/embeddings", {"model": "ir-a", "input": ["ok", "  "]}, 400, "input[1] is empty"),
        ("/v1/embeddings", {"model": "ir-a", "input": "revenue " * 100}, 400, "the limit is 64"),
        ("/v1/embeddings", {"model": "ad-a", "input": "x"}, 400, "needs an ir model"),
        ("/v1/embeddings", {"model": "ir-a", "input": "x", "dimensions": 999}, 400, "exceeds"),
        ("/v1/embeddings", {"input": "x"}, 400, "model: Field required"),
        ("/v1/classify", {"model": "ad-a", "query": "what?"}, 400, "passage is empty"),
        ("/v1/classify", {"model": "ir-a", "query": "what?", "passage": "x"}, 400, "needs an ad model"),
        ("/v1/detect", {"model": "ir-a", "image": "%%%"}, 400, "not valid base64"),
        ("/v1/detect", {"model": "ir-a", "image": base64.b64encode(b"not an image").decode()}, 400, "could not be decoded"),
        ("/v1/detect", {"model": "ir-a", "image": _png()}, 400, "needs an od model"),
        ("/v1/detect", {"model": "od-a"}, 400, "image: Field required"),
        ("/v1/detect", {"model": "od-a", "image": _png(), "query": "table " * 100}, 400, "the limit is 64"),
        ("/v1/embeddings", {"model": "od-a", "input": "x"}, 400, "needs an ir model"),
        ("/v1/classify", {"model": "ad-img", "query": "what?", "passage": "x"}, 400, "reads images"),
        ("/v1/classify", {"model": "ad-img", "query": "what?", "image": "%%%"}, 400, "not valid base64"),
        ("/v1/classify", {"model": "ad-a", "query": "what?", "image": _png()}, 400, "reads text passages"),
    ],
)
def test_bad_requests_get_clear_4xx(server, route, payload, status, fragment):
    r = HTTP.post(f"{server}{route}", json=payload, timeout=60)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]["message"]


def test_malformed_json_is_a_400(server):
    r = HTTP.post(f"{server}/v1/embeddings", data="{not json", headers={"content-type": "application/json"},
                      timeout=60)
    assert r.status_code == 400 and "invalid request body" in r.json()["error"]["message"]


def test_bounded_concurrency_no_errors(server):
    """32 clients x 20 requests across two adapters: every request answered, each answer correct."""
    ref = {}
    for m in ("ir-a", "ir-b"):
        ref[m] = np.asarray(HTTP.post(f"{server}/v1/embeddings", json={"model": m, "input": "revenue rose"},
                                          timeout=60).json()["data"][0]["embedding"])

    def client(i: int) -> list[str]:
        outcomes = []
        with requests.Session() as s:
            s.headers["Authorization"] = f"Bearer {API_KEY}"
            for j in range(20):
                m = "ir-a" if (i + j) % 2 else "ir-b"
                r = s.post(f"{server}/v1/embeddings", json={"model": m, "input": "revenue rose"}, timeout=120)
                if r.status_code != 200:
                    outcomes.append(f"http {r.status_code}")
                elif not np.allclose(r.json()["data"][0]["embedding"], ref[m], atol=1e-4):
                    outcomes.append("wrong answer")  # a 200 with another adapter's vector is a failure too
                else:
                    outcomes.append("ok")
        return outcomes

    assert not np.allclose(ref["ir-a"], ref["ir-b"], atol=1e-4)  # a mixed-up adapter would be visible
    with ThreadPoolExecutor(32) as pool:
        results = [c for codes in pool.map(client, range(32)) for c in codes]
    assert len(results) == 640
    assert results.count("ok") == 640, {c: results.count(c) for c in set(results)}


def test_api_keys_are_required_except_for_health(server):
    """401 in OpenAI's error shape without a key or with a wrong one, before the body is even read; /healthz open."""
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        r = requests.post(f"{server}/v1/embeddings", json={"model": "ir-a", "input": "x"}, headers=headers, timeout=60)
        assert r.status_code == 401, (headers, r.text)
        assert r.json() == {"error": {"message": "missing or invalid API key: send 'Authorization: Bearer KEY'",
                                      "type": "invalid_request_error", "code": "invalid_api_key"}}
    assert requests.get(f"{server}/v1/models", timeout=60).status_code == 401
    bad_body = requests.post(f"{server}/v1/embeddings", data="{not json", timeout=60,
                             headers={"content-type": "application/json"})
    assert bad_body.status_code == 401  # no key: nothing about the request is looked at
    assert requests.get(f"{server}/healthz", timeout=60).status_code == 200
    second = requests.post(f"{server}/v1/embeddings", json={"model": "ir-a", "input": "x"}, timeout=60,
                           headers={"Authorization": "Bearer skr-test-key-2"})
    assert second.status_code == 200  # every key of the file works


def test_oversized_body_is_refused_before_parsing(server):
    body = b'{"model": "ir-a", "input": "' + b"a" * MAX_REQUEST_BYTES + b'"}'
    r = HTTP.post(f"{server}/v1/embeddings", data=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert str(MAX_REQUEST_BYTES) in r.json()["error"]["message"]


def test_image_and_text_limits_are_400s_before_any_model_work(server):
    import io

    from PIL import Image

    def b64(image, fmt):
        buf = io.BytesIO()
        image.save(buf, fmt)
        return base64.b64encode(buf.getvalue()).decode()

    big = HTTP.post(f"{server}/v1/detect", json={"model": "od-a", "image": b64(Image.new("L", (2500, 2500)), "PNG")},
                    timeout=60)
    assert big.status_code == 400 and big.json()["error"]["code"] == "undecodable_image"
    assert "6250000 pixels; the limit is 5000000" in big.json()["error"]["message"]
    gif = HTTP.post(f"{server}/v1/detect", json={"model": "od-a", "image": b64(Image.new("L", (8, 8)), "GIF")},
                    timeout=60)
    assert gif.status_code == 400 and "PNG, JPEG, WEBP" in gif.json()["error"]["message"]
    long = HTTP.post(f"{server}/v1/embeddings", json={"model": "ir-a", "input": ["ok", "x" * 2500]}, timeout=60)
    assert long.status_code == 400 and long.json()["error"]["message"] == (
        "input[1] has 2500 characters; the limit is 2000")


# ---- API fuzz run: schemathesis drives the app's own OpenAPI schema against the real local Serve app ----------
FUZZ_CASES = 12  # per route, method and generation mode (valid bodies, then invalid ones)


def test_api_fuzz_never_500_and_errors_in_the_documented_shape(server):
    """Every generated request (valid and invalid bodies, every route) is answered 2xx or 4xx, a 4xx always as
    {"error": {"message", "type", "code"}}; never a 500."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    auth = {"Authorization": f"Bearer {API_KEY}"}
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json", headers=auth)
    seen: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=FUZZ_CASES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(mode))
            def check(case):
                response = case.call(base_url=server, headers=auth, timeout=120)
                label = f"{case.method} {case.path} {response.status_code}"
                seen[label] = seen.get(label, 0) + 1
                assert response.status_code < 500, (label, case.body, response.text[:300])
                if response.status_code >= 400:
                    try:
                        error = response.json().get("error")
                    except ValueError:  # not JSON at all
                        error = None
                    assert isinstance(error, dict), (label, case.headers, case.body, response.text[:300])
                    assert set(error) == {"message", "type", "code"}, error
                    assert error["type"] == "invalid_request_error", error

            try:
                check()
            except Unsatisfiable:  # a route without parameters or body has no invalid form
                assert mode == GenerationMode.NEGATIVE, operation
    routes = {label.rsplit(" ", 1)[0] for label in seen}
    assert {"POST /v1/embeddings", "POST /v1/classify", "POST /v1/detect", "GET /v1/models", "GET /healthz"} <= routes
    assert sum(seen.values()) >= 5 * FUZZ_CASES, seen
    logging.getLogger(__name__).info("API fuzz run: %d requests, none a 5xx: %s", sum(seen.values()), seen)


def test_replica_is_healthy_after_the_fuzz_run(server):
    health = HTTP.get(f"{server}/healthz", timeout=60).json()
    assert health["status"] == "ok"
    r = HTTP.post(f"{server}/v1/embeddings", json={"model": "ir-a", "input": "revenue rose"}, timeout=60)
    assert r.status_code == 200


def test_index_stage_and_search_over_http(server, indexed_run):
    """`skr index` encoded the corpus with ir-b on Ray Data actors into shards and an exact faiss index;
    POST /v1/search embeds the query with the same model and answers the nearest passages: a passage's own text
    finds itself first at cosine 1, the id filter holds, and the errors are clear."""
    run, _, summary = indexed_run
    assert summary["vectors"] == len(CORPUS) and summary["kind"] == "exact" and summary["encoded_this_run"] == 40
    assert list((run / "index" / "vectors").glob("*.parquet")) and (run / "index" / "index.faiss").is_file()
    r = HTTP.post(f"{server}/v1/search", json={"model": "ir-b", "query": CORPUS[7]["text"], "top_k": 3}, timeout=60)
    assert r.status_code == 200, r.text
    hits = r.json()["data"]
    assert len(hits) == 3 and hits[0]["id"] == "d7" and hits[0]["text"] == CORPUS[7]["text"]
    assert hits[0]["score"] == pytest.approx(1.0, abs=2e-3) and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    only = HTTP.post(f"{server}/v1/search", json={"model": "ir-b", "query": CORPUS[7]["text"], "top_k": 5,
                                                    "ids": ["d1", "d2"]}, timeout=60).json()["data"]
    assert sorted(h["id"] for h in only) == ["d1", "d2"]
    no_index = HTTP.post(f"{server}/v1/search", json={"model": "ir-a", "query": "revenue"}, timeout=60)
    assert no_index.status_code == 400 and no_index.json()["error"]["code"] == "no_index"
    wrong = HTTP.post(f"{server}/v1/search", json={"model": "ad-a", "query": "revenue"}, timeout=60)
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "wrong_task"
    bad_k = HTTP.post(f"{server}/v1/search", json={"model": "ir-b", "query": "x", "top_k": 0}, timeout=60)
    assert bad_k.status_code == 400 and bad_k.json()["error"]["code"] == "invalid_body" and "top_k" in bad_k.text
    assert requests.post(f"{server}/v1/search", json={"model": "ir-b", "query": "x"}, timeout=60).status_code == 401
