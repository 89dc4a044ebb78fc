"""Search at scale: `/v1/search` over an index of a million vectors.

Builds the index the way `skr index` does (`build_from_shards`: IVF above `index.exact_max`, probes raised until
recall@10 against exact search on a sample of the corpus reaches `index.min_recall`) over vector shards of the
size asked for, serves it from a run folder beside a tiny random IR checkpoint of the same width, and measures
the latency of `POST /v1/search` over HTTP with N closed-loop clients (each query is embedded by the backbone
replica, then searched in the index deployment).

The vectors are synthetic: unit vectors around a few thousand directions with noise (corpus embeddings cluster;
uniformly random ones would make any IVF index look bad and any exact one look typical). Encoding a million
passages is measured by `benchmarks/scale_curve.py`; this script measures the build and the search.

    python benchmarks/search_scale.py --vectors 1000000 --dim 576 --clients 16 --seconds 60 --out runs/search_scale
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("search_scale")


def write_shards(folder: Path, n: int, dim: int, shard_rows: int, centres: int, noise: float, seed: int = 0) -> None:
    """``n`` clustered unit vectors as parquet shards of (id, text, vector), as `skr index` writes them: a
    random centre plus noise of norm about ``noise`` (1.0: cosine about 0.7 to the centre), normalized."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    for start in range(0, n, shard_rows):
        m = min(shard_rows, n - start)
        v = c[rng.integers(0, centres, m)] + noise / np.sqrt(dim) * rng.standard_normal((m, dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        ids = [f"p{i:07d}" for i in range(start, start + m)]
        pq.write_table(pa.table({"id": ids, "text": [f"passage {i}" for i in ids],
                                 "vector": pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), dim)}),
                       folder / f"shard-{start // shard_rows:05d}.parquet")


async def closed_loop(url: str, queries: list[str], clients: int, seconds: float, top_k: int) -> dict:
    import aiohttp

    latencies: list[float] = []
    errors: dict[str, int] = {}
    rng = random.Random(0)
    stop = time.perf_counter() + seconds

    async def client(session) -> None:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            async with session.post(url + "/v1/search", json={"model": "ir", "query": rng.choice(queries),
                                                               "top_k": top_k}) as r:
                body = await r.json(content_type=None)
                if r.status == 200 and len(body.get("data", [])) == top_k:
                    latencies.append(time.perf_counter() - start)
                else:
                    key = "shed" if r.status == 503 else str(r.status)  # the admission bound said no
                    errors[key] = errors.get(key, 0) + 1

    begin = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    elapsed = time.perf_counter() - begin
    lat = np.asarray(latencies)
    return {"clients": clients, "answered": len(latencies), "errors": errors,
            "answered_per_s": round(len(latencies) / elapsed, 2),
            "p50_s": round(float(np.percentile(lat, 50, method="inverted_cdf")), 4) if len(lat) else None,
            "p99_s": round(float(np.percentile(lat, 99, method="inverted_cdf")), 4) if len(lat) else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=576, help="embedding width (576: SmolLM2-135M's)")
    ap.add_argument("--centres", type=int, default=10_000)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--min-recall", type=float, default=0.95)
    ap.add_argument("--out", default="runs/search_scale")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import ray

    from skr_ray.artifacts import Artifacts, write_json
    from skr_ray.config import IndexConfig
    from skr_ray.corpus import demo_dir, iter_jsonl
    from skr_ray.ray_utils import PeakRSS
    from skr_ray.tasks.ir.index import SUMMARY, VECTORS, build_from_shards
    from tests.tiny import build_tiny_model, make_checkpoint, serve_locally

    out = Path(args.out).resolve()
    run = out / f"run-{args.vectors}-{args.dim}"
    art = Artifacts(str(run))
    tiny = out / f"tiny-model-{args.dim}"
    if not (tiny / "config.json").is_file():
        build_tiny_model(tiny, hidden=args.dim)
    if not (art.checkpoint_dir / "head.json").is_file():
        make_checkpoint(tiny, art.checkpoint_dir)
    vectors = art.index_dir / VECTORS
    result: dict = {"vectors": args.vectors, "dim": args.dim, "centres": args.centres, "noise": args.noise}
    if not (art.index_dir / SUMMARY).is_file():
        start = time.perf_counter()
        write_shards(vectors, args.vectors, args.dim, IndexConfig().shard_rows, args.centres, args.noise)
        result["write_shards_s"] = round(time.perf_counter() - start, 1)
        defaults = IndexConfig()
        peak = PeakRSS()
        peak.start()
        start = time.perf_counter()
        info = build_from_shards(str(vectors), str(art.index_dir), defaults.exact_max, args.min_recall,
                                 defaults.recall_sample, defaults.nlist, 0)
        info["build_s"] = round(time.perf_counter() - start, 1)
        info["build_peak_rss_mib"] = round(peak.stop())
        write_json(art.index_dir / SUMMARY, info)
        Artifacts.mark_done(art.index_dir, info)
    result["index"] = json.loads((art.index_dir / SUMMARY).read_text())
    log.info("index: %s", result["index"])

    queries = [str(row["text"])[:300] for _, row in iter_jsonl(demo_dir() / "queries.jsonl")]
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    with serve_locally({"ir": str(run)}, "search-scale") as url:
        asyncio.run(closed_loop(url, queries, 2, 10.0, args.top_k))  # warm: tokenizer, first batches
        result["one_client"] = asyncio.run(closed_loop(url, queries, 1, args.seconds / 2, args.top_k))
        result["loaded"] = asyncio.run(closed_loop(url, queries, args.clients, args.seconds, args.top_k))
    ray.shutdown()
    log.info("search: one client %s; %d clients %s", result["one_client"], args.clients, result["loaded"])
    (out / f"summary-{args.vectors}-{args.dim}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
