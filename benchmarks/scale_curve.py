"""Scale curve: annotate and index corpora of growing size on a local Ray cluster, with a tiny random model and a
few new tokens, so that what is measured is the Ray Data machinery (reads, the length sort and cut, actor pools,
label and vector shards, the faiss build), not a real model's compute.

For each size: rows/s of `skr annotate` and of `skr index` (encode + index build), the driver's peak RSS while
the stage ran, the object store's spill, and wall time. A linear pipeline keeps rows/s flat as the corpus grows
and the driver's memory flat (it holds no rows). Each stage runs as its own driver process on the benchmark's
cluster, as `skr annotate` / `skr index` would: its peak is what that stage needs, not what an earlier stage or
this script (corpus writing, the tiny model's build) left allocated.

The corpus is realistic text: passages recombined from the sentences of the shipped demo paragraphs (3–6
sentences each, unique ids), written as JSONL.

    python benchmarks/scale_curve.py --rows 10000 100000 --out runs/scale_curve
    python benchmarks/scale_curve.py --rows 10000 1000000 --kill-at-rows 1000000 --out runs/scale_curve

With ``--kill-at-rows``, that size's annotation first runs as a driver of its own and is SIGKILLed about half
way; the timed annotation then resumes it, and the row reports how many documents were redone and whether every
row has exactly one label.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("scale_curve")


def demo_sentences() -> list[str]:
    from skr_ray.corpus import demo_dir, iter_jsonl

    sentences: list[str] = []
    for _, row in iter_jsonl(demo_dir() / "corpus.jsonl"):
        sentences += [s.strip() for s in re.split(r"(?<=[.!?])\s+", str(row.get("text", ""))) if len(s.split()) > 3]
    return sentences


def write_corpus(path: Path, rows: int, seed: int = 0) -> Path:
    """``rows`` passages of 3–6 sentences drawn from the demo's, ids p0000000..., as JSONL."""
    if path.is_file() and sum(1 for _ in path.open()) == rows:
        return path
    sentences = demo_sentences()
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for i in range(rows):
            picks = rng.choice(len(sentences), size=int(rng.integers(3, 7)), replace=False)
            f.write(json.dumps({"_id": f"p{i:07d}", "text": " ".join(sentences[j] for j in picks)}) + "\n")
    tmp.replace(path)
    return path


def labelled_rows(labels: Path) -> int:
    import pyarrow.parquet as pq

    rows = 0
    for f in labels.glob("*.parquet") if labels.is_dir() else []:
        try:
            rows += pq.read_metadata(f).num_rows
        except Exception:  # noqa: BLE001 - a file being written
            pass
    return rows


def kill_half_way(overrides: list[str], labels: Path, n: int, fraction: float) -> dict:
    """`skr annotate` as a driver of its own on this Ray cluster, SIGKILLed once ``fraction`` of the rows have
    label files; what was on disk then."""
    import os
    import signal
    import subprocess

    import ray

    env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address)
    proc = subprocess.Popen([sys.executable, "-m", "skr_ray.cli", "annotate", *overrides], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    start = time.perf_counter()
    while proc.poll() is None and labelled_rows(labels) < fraction * n:
        time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(5)  # the cluster reaps the dead driver's actors
    return {"killed_after_s": round(time.perf_counter() - start, 1), "rows_on_disk_at_kill": labelled_rows(labels)}


def once_each(labels: Path, n: int) -> dict:
    """Whether every document of the corpus has exactly one label row (one label kind, one question each)."""
    from skr_ray.annotate.labelstore import read_labels

    ids = read_labels(labels, columns=["doc_id"]).column("doc_id")
    unique = len(ids.unique())
    return {"label_rows": len(ids), "documents": unique, "every_row_once": len(ids) == unique == n}


def timed(stage: str, overrides: list[str]) -> tuple[dict, float, float, float]:
    """(summary, seconds, the driver's peak RSS MiB, MiB spilled during the stage): the stage runs in a fresh
    driver process connected to this cluster."""
    import os
    import subprocess

    import ray

    from skr_ray.ray_utils import spilled_mib

    spill0 = spilled_mib()
    env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address)
    proc = subprocess.run([sys.executable, __file__, "--stage", stage, *overrides], env=env, capture_output=True,
                          text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.exit(f"{stage} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    r = json.loads(line[len("RESULT "):])
    return r["summary"], r["seconds"], r["peak_mib"], spilled_mib() - spill0


def run_stage(stage: str, overrides: list[str]) -> None:
    """One stage in this process (a fresh driver); prints its summary, seconds and this process's peak RSS."""
    from skr_ray.config import load_config
    from skr_ray.ray_utils import PeakRSS

    rss = PeakRSS()
    rss.start()
    start = time.perf_counter()
    cfg = load_config(None, overrides)
    if stage == "annotate":
        from skr_ray.tasks.ir.annotate import run_annotation as run
    else:
        from skr_ray.tasks.ir.index import run_index as run
    summary = run(cfg)
    seconds = time.perf_counter() - start
    print("RESULT " + json.dumps({"summary": summary, "seconds": seconds, "peak_mib": rss.stop()}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--out", default="runs/scale_curve")
    ap.add_argument("--max-new-tokens", type=int, default=4)
    ap.add_argument("--kill-at-rows", type=int, nargs="*", default=[],
                    help="sizes whose annotation is first killed part way (SIGKILL of its driver) and resumed")
    ap.add_argument("--kill-fraction", type=float, default=0.5)
    ap.add_argument("--stage", choices=("annotate", "index"), help=argparse.SUPPRESS)  # one stage, as a driver
    ap.add_argument("overrides", nargs="*", help="config overrides (key.sub=value) for every run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.stage:
        run_stage(args.stage, args.overrides)
        return

    from skr_ray.config import load_config
    from skr_ray.ray_utils import ensure_ray
    from tests.tiny import LOOSE_FILTERS, build_tiny_model, make_checkpoint

    out = Path(args.out).resolve()
    tiny = out / "tiny-model"
    if not (tiny / "config.json").is_file():
        build_tiny_model(tiny)
    ckpt = out / "tiny-checkpoint"
    if not (ckpt / "head.json").is_file():
        make_checkpoint(tiny, ckpt)
    rows_out = []
    for n in args.rows:
        corpus = write_corpus(out / f"corpus-{n}.jsonl", n)
        overrides = [f"model.name_or_path={tiny}", f"output_dir={out / f'run-{n}'}", f"data.unlabeled={corpus}",
                     "annotate.label_kinds=[question]", f"annotate.max_new_tokens={args.max_new_tokens}",
                     "annotate.batch_size=64", f"index.checkpoint={ckpt}", "evaluate.batch_size=64",
                     *LOOSE_FILTERS, *args.overrides]
        cfg = load_config(None, overrides)
        ensure_ray(cfg.ray)
        killed = {}
        if n in args.kill_at_rows:  # the first run is killed about half way; the timed run below resumes it
            killed = kill_half_way(overrides, Path(cfg.output_dir) / "annotate" / "labels", n, args.kill_fraction)
        ann, ann_s, ann_rss, ann_spill = timed("annotate", overrides)
        if killed:
            killed |= once_each(Path(cfg.output_dir) / "annotate" / "labels", n)
            killed |= {k: ann[k] for k in ("resumed_from_documents", "labelled_this_run", "documents_redone")}
            killed["redone_fraction"] = round(ann["documents_redone"] / n, 5)
            log.info("kill and resume: %s", killed)
        idx, idx_s, idx_rss, idx_spill = timed("index", overrides)
        row = {"rows": n, "annotate_s": round(ann_s, 1), "annotate_rows_per_s": round((ann["labelled_this_run"] if killed else n) / ann_s, 1),
               "annotate_driver_peak_mib": round(ann_rss), "annotate_spilled_mib": ann_spill,
               "labelled": ann["documents_labelled"], "label_files": len(list((Path(cfg.output_dir) / "annotate"
                                                                                / "labels").glob("*.parquet"))),
               "index_s": round(idx_s, 1), "index_rows_per_s": round(n / idx_s, 1),
               "index_driver_peak_mib": round(idx_rss), "index_spilled_mib": idx_spill,
               "vectors": idx["vectors"], "index_kind": idx["kind"], "recall_at_10": idx["recall_at_10"],
               **({"kill_and_resume": killed} if killed else {})}
        log.info("%s", json.dumps(row))
        rows_out.append(row)
        (out / "summary.json").write_text(json.dumps(rows_out, indent=1))
    base = rows_out[0]
    for r in rows_out:
        r["annotate_rate_vs_smallest"] = round(r["annotate_rows_per_s"] / base["annotate_rows_per_s"], 3)
        r["index_rate_vs_smallest"] = round(r["index_rows_per_s"] / base["index_rows_per_s"], 3)
    (out / "summary.json").write_text(json.dumps(rows_out, indent=1))
    plot(rows_out, out / "scale_curve.png")
    print(json.dumps(rows_out, indent=1))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["rows"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(n, [r["annotate_rows_per_s"] for r in rows], "o-", label="annotate")
    a.plot(n, [r["index_rows_per_s"] for r in rows], "s-", label="index (encode + build)")
    a.set(xscale="log", xlabel="corpus rows", ylabel="rows / s", title="throughput", ylim=(0, None))
    a.legend()
    b.plot(n, [r["annotate_driver_peak_mib"] for r in rows], "o-", label="annotate")
    b.plot(n, [r["index_driver_peak_mib"] for r in rows], "s-", label="index")
    b.set(xscale="log", xlabel="corpus rows", ylabel="MiB", title="driver peak RSS", ylim=(0, None))
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
