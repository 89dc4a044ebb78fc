"""Serving benchmark, measured in one run on the same machine and model.

1. /v1/embeddings over real HTTP (concurrent clients, one text per request, dynamic batching in the
   replica) vs the raw batched forward of the same checkpoint: throughput and p50/p99 latency.
2. classify: the SKR head (one forward) vs the base model's NTP answer (greedy generation) for the
   same (query, passage), one case at a time in the same process; /v1/classify over HTTP alongside.
3. detect: the SKR box head (one forward) vs the base model's NTP answer (greedy generation of the box
   as text, ``--box-tokens`` new tokens) for the same real document page and prompt, one page at a time in
   the same process; /v1/detect over HTTP alongside. No vision-language model can be downloaded here:
   ``--od small`` builds a random Gemma-3 OD checkpoint with the compute of a small real VLM (SigLIP-B/16
   at 224 px, 64 image tokens, a SmolLM2-135M-sized text tower), ``--od tiny`` the test model.

    python benchmarks/serve_latency.py --ir runs/demo [--ad runs/tatqa_ad] [--od CKPT|small|tiny] [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _pct(values: list[float], q: float) -> float:
    """The q-quantile of ``values`` as one of them (nearest rank); nan for none."""
    import numpy as np

    return float(np.percentile(values, 100 * q, method="nearest")) if len(values) else float("nan")


def _texts(n: int) -> list[str]:
    from skr_ray.corpus import demo_dir

    rows = [json.loads(line)["text"] for line in (demo_dir() / "corpus.jsonl").read_text().splitlines()]
    return [rows[i % len(rows)] for i in range(n)]


class RawForward:
    """The checkpoint's batched forward in this process (LoRA merged, as the replica serves one adapter): the loop
    a user writes without Serve."""

    def __init__(self, ckpt: str) -> None:
        from skr_ray.models.checkpoint import load_skr_model

        self.skr = load_skr_model(ckpt)
        self.model = self.skr.model.merge_and_unload()
        self.run(["warm up", "the caches"], 2)

    def run(self, texts: list[str], batch: int) -> tuple[float, list[float], "np.ndarray"]:
        """(texts/s, per-batch latencies, embeddings)."""
        import numpy as np

        from skr_ray.models.encoding import embed_texts

        skr, lat, out, t0 = self.skr, [], [], time.perf_counter()
        for i in range(0, len(texts), batch):
            t = time.perf_counter()
            out.append(embed_texts(self.model, skr.tokenizer, texts[i : i + batch], skr.config.evaluate.max_length,
                                   skr.head, "cpu", skr.head_info.get("prompt", "plain")).numpy())
            lat.append(time.perf_counter() - t)
        return len(texts) / (time.perf_counter() - t0), lat, np.concatenate(out)


def min_cosine(a: "np.ndarray", b: "np.ndarray") -> float:
    import numpy as np

    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def http_embeddings(url: str, model: str, texts: list[str], concurrency: int
                    ) -> tuple[float, list[float], int, "np.ndarray"]:
    """(texts/s, per-request latencies, non-200 answers, embeddings in the order of ``texts``)."""
    import numpy as np
    import requests

    def one(text: str) -> tuple[float, int, list[float] | None]:
        t = time.perf_counter()
        r = requests.post(f"{url}/v1/embeddings", json={"model": model, "input": text}, timeout=600)
        vec = r.json()["data"][0]["embedding"] if r.status_code == 200 else None
        return time.perf_counter() - t, r.status_code, vec

    requests.post(f"{url}/v1/embeddings", json={"model": model, "input": texts[0]}, timeout=600)  # adapter load
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, texts))
    elapsed = time.perf_counter() - t0
    dim = next((len(r[2]) for r in results if r[2] is not None), 1)
    vectors = np.array([r[2] if r[2] is not None else [np.nan] * dim for r in results], dtype=np.float32)
    return len(texts) / elapsed, [r[0] for r in results], sum(1 for r in results if r[1] != 200), vectors


def handle_embeddings(model: str, texts: list[str], concurrency: int) -> tuple[float, list[float]]:
    """The backbone deployment called through its Serve handle: no HTTP proxy, no ingress (validation, token
    count), the same dynamic batching in the replica."""
    from ray import serve

    handle = serve.get_deployment_handle("SKRBackbone", app_name="skr").options(multiplexed_model_id=model)

    def one(text: str) -> float:
        t = time.perf_counter()
        handle.embed.remote([text]).result()
        return time.perf_counter() - t

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        lat = list(pool.map(one, texts))
    return len(texts) / (time.perf_counter() - t0), lat


def _replica_stats(reset: bool = False) -> dict:
    from ray import serve

    return serve.get_deployment_handle("SKRBackbone", app_name="skr").batch_stats.remote(reset).result()


def _test_helpers():
    """tests/tiny.py: the random Gemma-3 builder and the real-page reader the tests use."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tests.tiny

    return tests.tiny


def detect_latency(url: str, ckpt: str, n_pages: int, box_tokens: int) -> None:
    import base64
    import io

    import requests
    import torch

    from skr_ray.models.checkpoint import load_skr_model
    from skr_ray.models.vision import image_batch, image_final_states
    from skr_ray.tasks.od.boxes import parse_box
    from skr_ray.tasks.od.prompts import render_prompts

    pages = [_test_helpers().docpage(i)[0] for i in range(n_pages)]
    http = []
    for page in pages:
        buf = io.BytesIO()
        page.save(buf, format="JPEG", quality=90)
        body = {"model": "od", "image": base64.b64encode(buf.getvalue()).decode()}
        t = time.perf_counter()
        requests.post(f"{url}/v1/detect", json=body, timeout=600).raise_for_status()
        http.append(time.perf_counter() - t)
    skr = load_skr_model(ckpt)
    processor = skr.tokenizer
    prompt = render_prompts(processor, [""])
    head_lat, ntp_lat, parsed = [], [], 0
    with torch.inference_mode():
        for i, page in enumerate([pages[0], *pages]):  # the first is a warm-up
            t = time.perf_counter()
            skr.head(image_final_states(skr.model, image_batch(processor, [page], prompt)))
            head_lat.append(time.perf_counter() - t)
            t = time.perf_counter()
            with skr.model.disable_adapter():
                batch = image_batch(processor, [page], prompt)
                out = skr.model.generate(**batch, max_new_tokens=box_tokens, min_new_tokens=box_tokens,
                                         do_sample=False)
            answer = processor.tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            ntp_lat.append(time.perf_counter() - t)
            parsed += int(i > 0 and parse_box(answer)[1] == "ok")
    head_lat, ntp_lat = head_lat[1:], ntp_lat[1:]
    p50 = statistics.median
    print(f"detect, {len(pages)} document pages one at a time ({skr.config.model.name_or_path}):")
    print(f"  SKR box head, in-process : p50 {p50(head_lat):.3f}s p99 {_pct(head_lat, 0.99):.3f}s")
    print(f"  base NTP, in-process     : p50 {p50(ntp_lat):.3f}s p99 {_pct(ntp_lat, 0.99):.3f}s "
          f"(greedy, {box_tokens} new tokens; parseable boxes {parsed}/{len(pages)})")
    print(f"  /v1/detect over HTTP     : p50 {p50(http):.3f}s p99 {_pct(http, 0.99):.3f}s")
    print(f"  latency ratio head/NTP (p50, in-process): {p50(head_lat) / p50(ntp_lat):.2f}")


def _random_od_checkpoint(size: str) -> str:
    import tempfile

    tiny = _test_helpers()
    root = Path(tempfile.mkdtemp(prefix="skr-od-bench-"))
    return str(tiny.make_checkpoint(tiny.build_tiny_vlm(root / "vlm", size=size), root / "od", "od", seed=1))


def main() -> None:
    import ray
    from ray import serve

    from skr_ray.serve.app import build_app

    parser = argparse.ArgumentParser()
    parser.add_argument("--ir", default=None, help="IR checkpoint or run folder (embeddings benchmark)")
    parser.add_argument("--ad", default=None, help="AD checkpoint or run folder (classify benchmark)")
    parser.add_argument("--od", default=None, help="OD checkpoint, or small|tiny (random Gemma-3; detect benchmark)")
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--box-tokens", type=int, default=24, help="tokens the base model generates per box")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batch-wait", type=float, default=0.01,
                        help="the replica's batch_wait_timeout_s: how long a batch waits to fill while it idles")
    parser.add_argument("--max-batch-wait", type=float, default=0.2,
                        help="max_batch_wait_s: the longest wait while it is saturated (= --batch-wait: fixed)")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3,
                        help="embeddings: raw and HTTP alternate this many times (median and spread)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from skr_ray.serve.registry import _resolve_checkpoint

    od = None
    if args.od:
        od = (_random_od_checkpoint(args.od) if args.od in ("tiny", "small")
              else str(_resolve_checkpoint(Path(args.od).resolve())))
    texts = _texts(args.requests)
    if args.ir:
        ir = str(_resolve_checkpoint(Path(args.ir).resolve()))
        raw = RawForward(ir)
    ray.init(num_cpus=2, include_dashboard=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    models = ({"ir": args.ir} if args.ir else {}) | ({"ad": args.ad} if args.ad else {}) | ({"od": od} if od else {})
    two_bases = bool(od) and bool(args.ir or args.ad)  # two backbone deployments on a 2-CPU machine
    backbone = {"ray_actor_options": {"num_cpus": 0.5}} if two_bases else {}
    serve.run(build_app({"models": models, "auth": {"disabled": True}, "max_batch_size": args.batch, "max_input_tokens": 4096,
                         "batch_wait_timeout_s": args.batch_wait, "max_batch_wait_s": args.max_batch_wait,
                         "backbone": backbone,
                         # throughput with batching is measured here: the fixed bound only (32 >= --concurrency)
                         "latency_tolerance": 0}), name="skr", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    if args.ir:
        import os

        # Raw and HTTP alternate (raw, HTTP, HTTP, raw, ...): both warm, each repeat on the same texts; every HTTP
        # answer must be the raw forward's vector (cosine >= 0.9999), or the speeds are not comparable.
        raw_runs, http_runs, worst = [], [], 1.0
        for rep in range(args.repeats):
            for side in ("raw", "http") if rep % 2 == 0 else ("http", "raw"):
                if side == "raw":
                    raw_runs.append(raw.run(texts, args.batch))
                else:
                    _replica_stats(reset=True)
                    http_runs.append(http_embeddings(url, "ir", texts, args.concurrency))
                    http_stats = _replica_stats(reset=True).get("embed", {})
            worst = min(worst, min_cosine(raw_runs[-1][2], http_runs[-1][3]))
        raw_tps, raw_lat = statistics.median(r[0] for r in raw_runs), raw_runs[-1][1]
        http_tps, http_lat = statistics.median(r[0] for r in http_runs), http_runs[-1][1]
        errors = sum(r[2] for r in http_runs)
        handle_tps, handle_lat = handle_embeddings("ir", texts, args.concurrency)
        handle_stats = _replica_stats(reset=True).get("embed", {})
        print(f"cores={os.cpu_count()} texts={len(texts)} batch={args.batch} batch_wait={args.batch_wait}s max_batch_wait={args.max_batch_wait}s "
              f"concurrency={args.concurrency} repeats={args.repeats}")
        for name, runs in (("raw", [r[0] for r in raw_runs]), ("http", [r[0] for r in http_runs])):
            print(f"{name:4s} texts/s per repeat: {', '.join(f'{x:.2f}' for x in runs)} (median "
                  f"{statistics.median(runs):.2f}, spread {min(runs):.2f}-{max(runs):.2f})")
        # A text in a raw batch waits for its whole batch: the batch's forward time is its latency.
        print(f"raw batched forward : {raw_tps:.2f} texts/s (median); per-text latency (its batch) p50 "
              f"{statistics.median(raw_lat):.3f}s p99 {_pct(raw_lat, 0.99):.3f}s")
        print(f"/v1/embeddings HTTP : {http_tps:.2f} texts/s (median); per-request p50 {statistics.median(http_lat):.3f}s "
              f"p99 {_pct(http_lat, 0.99):.3f}s; errors {errors}")
        print(f"backbone handle     : {handle_tps:.2f} texts/s; per-request p50 {statistics.median(handle_lat):.3f}s "
              f"p99 {_pct(handle_lat, 0.99):.3f}s (no proxy, no ingress)")
        print(f"throughput ratio http/raw: {http_tps / raw_tps:.2f} (medians)   handle/raw: {handle_tps / raw_tps:.2f}")
        print(f"HTTP answers against the raw forward: lowest cosine {worst:.6f} (limit 0.9999)")
        if worst < 0.9999 or errors:
            raise SystemExit("HTTP answered differently from the raw forward: the speeds are not comparable")
        # Where a request's time goes: the model's share is what the replica spent in forwards; the rest of the
        # wall time is the proxy and ingress hop (HTTP run only), queueing for a batch and (de)serialization.
        for name, tps, st in (("HTTP", http_tps, http_stats), ("handle", handle_tps, handle_stats)):
            if st.get("batches"):
                wall = len(texts) / tps
                print(f"profile {name:6s}: {st['batches']} batches, mean size {st['items'] / st['batches']:.1f}; "
                      f"model {st['model_s']:.1f}s of {wall:.1f}s wall ({100 * st['model_s'] / wall:.0f}%); "
                      f"the raw loop needs {len(texts) / raw_tps:.1f}s for the same texts")
    if od:
        detect_latency(url, od, args.pages, args.box_tokens)

    if args.ad:
        import numpy as np
        import requests

        from skr_ray.config import load_config
        from skr_ray.tasks.ad.pairs import read_eval_pairs
        from skr_ray.tasks.ad.scoring import PairScorer

        pairs = read_eval_pairs("demo", 4000)[: args.pairs]
        http_head = []
        for p in pairs:
            t = time.perf_counter()
            requests.post(f"{url}/v1/classify", json={"model": "ad", "query": p.query, "passage": p.passage},
                          timeout=600).raise_for_status()
            http_head.append(time.perf_counter() - t)
        serve.shutdown()
        ad_ckpt = str(_resolve_checkpoint(Path(args.ad).resolve()))
        cfg = load_config(Path(ad_ckpt) / "config.yaml")

        def one_by_one(scorer: PairScorer) -> list[float]:
            def case(p) -> dict:
                return {"pair_id": np.asarray([p.pair_id]), "query": np.asarray([p.query]),
                        "passage": np.asarray([p.passage])}

            scorer(case(pairs[0]))  # warm-up
            lat = []
            for p in pairs:
                t = time.perf_counter()
                scorer(case(p))
                lat.append(time.perf_counter() - t)
            return lat

        # Same process, same prompt, one case at a time: the trained head's forward vs base generation.
        head_lat = one_by_one(PairScorer(cfg.to_dict(), "head", ad_ckpt, 1))
        # the same forward without the head: what the head itself adds on top of its prompt's forward
        states_lat = one_by_one(PairScorer(cfg.to_dict(), "states", ad_ckpt, 1))
        ntp_lat = one_by_one(PairScorer(cfg.to_dict(), "judge", None, 1))
        p50 = statistics.median
        print(f"classify, {len(pairs)} demo pairs one at a time:")
        print(f"  SKR head, in-process   : p50 {p50(head_lat):.3f}s p99 {_pct(head_lat, 0.99):.3f}s")
        print(f"  prompt forward, no head: p50 {p50(states_lat):.3f}s p99 {_pct(states_lat, 0.99):.3f}s "
              f"(the head adds {1000 * (p50(head_lat) - p50(states_lat)):+.1f} ms at p50)")
        print(f"  base NTP, in-process   : p50 {p50(ntp_lat):.3f}s p99 {_pct(ntp_lat, 0.99):.3f}s "
              f"(greedy, up to {cfg.ad.max_new_tokens} new tokens)")
        print(f"  /v1/classify over HTTP : p50 {p50(http_head):.3f}s p99 {_pct(http_head, 0.99):.3f}s")
        print(f"  latency ratio head/NTP (p50, in-process): {p50(head_lat) / p50(ntp_lat):.2f}")
    else:
        serve.shutdown()


if __name__ == "__main__":
    main()
