"""Cluster operation costs, measured in one run on real local multi-node Ray clusters:

1. annotation throughput with 1 node vs 2 nodes (same machine, same rows, one actor per node);
2. the overhead of submitting a stage through the Ray Jobs API vs running the same stage directly.

Both nodes share this machine's cores, so the 2-node figure shows the orchestration cost of spreading
the pool, not extra hardware: on real separate nodes each actor brings its own cores.

    python benchmarks/cluster_scaling.py [--rows 24] [--cpus-per-node 2] [key=value overrides]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _summary(out: Path) -> dict:
    return json.loads((out / "annotate" / "summary.json").read_text())


def submitted(cluster, overrides: list[str], out: Path) -> float:
    """Wall time of `skr submit annotate` (upload, job start, run) until the job has succeeded."""
    from skr_ray.jobs_client import submit, wait_until_done

    start = time.perf_counter()
    job_id, _ = submit(cluster.jobs_url, "annotate", None, [*overrides, f"output_dir={out}"], wait=False)
    final = wait_until_done(cluster.jobs_url, job_id, 3600)
    if not final.endswith("SUCCEEDED"):
        raise RuntimeError(f"benchmark job {job_id} ended {final}")
    return time.perf_counter() - start


def direct(cluster, overrides: list[str], out: Path) -> float:
    """Wall time of the same stage run as `skr annotate` against the same cluster (no Jobs API)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "skr_ray.cli", "annotate", *overrides, f"output_dir={out}",
                    f"ray.address={cluster.address}"], check=True, cwd=REPO, env=cluster.env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    from skr_ray.local_cluster import LocalCluster

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=24)
    # 2: one for the annotation actor, one for the Ray Data tasks around it (1 would starve them)
    parser.add_argument("--cpus-per-node", type=int, default=2)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="skr-cluster-bench-"))
    base = [f"data.max_docs={args.rows}", "annotate.rows_per_file_batches=1", "model.threads=1", *args.overrides]

    rates = {}
    for workers in (0, 1):  # 1 node, then 2 nodes
        nodes = workers + 1
        with LocalCluster(workers=workers, cpus_per_node=args.cpus_per_node) as cluster:
            out = tmp / f"nodes{nodes}"
            seconds = submitted(cluster, [*base, f"annotate.num_actors={nodes}"], out)
            s = _summary(out)
            rates[nodes] = s["documents_labelled"] / s["seconds"]
            print(f"{nodes} node(s): {rates[nodes]:.3f} rows/s inside the stage "
                  f"({s['documents_labelled']} rows, {s['seconds']:.1f} s); job wall {seconds:.1f} s", flush=True)
            if nodes == 1:
                direct_s = direct(cluster, [*base, "annotate.num_actors=1"], tmp / "direct")
                job_s = submitted(cluster, [*base, "annotate.num_actors=1"], tmp / "job")
    print(f"annotation 2 nodes / 1 node        : {rates[2] / rates[1]:.2f}x rows/s (nodes share this machine's cores)")
    print(f"stage via Jobs API                 : {job_s:.1f} s")
    print(f"same stage run directly (skr CLI)  : {direct_s:.1f} s")
    print(f"submission overhead                : {job_s - direct_s:+.1f} s ({job_s / direct_s:.2f}x)")


if __name__ == "__main__":
    main()
