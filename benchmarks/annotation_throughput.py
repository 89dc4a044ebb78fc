"""Self-annotation throughput: the Ray Data actor pool against the same engine run by hand, best plain side first.

Three sides label the same rows with the same model, prompt, batches and engine (``SelfAnnotator``: the length
sort, the cut into blocks, the shared-prefix KV cache, the filters); only what runs them differs:

- ``plain-1x2``: one process with 2 threads (what one writes first);
- ``plain-2x1``: two processes with 1 thread each, fed block by block (the trick the actor pool uses);
- ``ray``: ``skr annotate``'s Ray Data pipeline (one replica per core).

Each side runs in a fresh process and its clock covers everything it must do: Ray's start, process spawns and
model loads included. The sides alternate ``--repeats`` times (A B C, C B A, ...); the script prints each side's
median rows/s with its spread, the ratio of Ray to the best plain side, and checks that every side wrote the same
labels row by row (raw greedy output, label, status): a faster side that labelled differently would not count.

    python benchmarks/annotation_throughput.py [--rows 64] [--repeats 3] [--actors N] [key=value overrides]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIDES = ("plain-1x2", "plain-2x1", "ray")
_WORKER = None


def _config(out: str, rows: int, overrides: list[str]):
    from skr_ray.config import load_config

    return load_config(None, [f"output_dir={out}", f"data.max_docs={rows}", *overrides])


def _blocks(cfg) -> list[dict]:
    """The rows the pipeline reads (first ``max_docs`` of the corpus, normalized), longest first, cut into the
    blocks of one actor call, as ``run_annotation`` streams them (``skr_ray.corpus.local_blocks``)."""
    from skr_ray.corpus import local_blocks

    return list(local_blocks(cfg.data.unlabeled, cfg.data.max_chars, cfg.data.max_docs,
                             cfg.annotate.batch_size * cfg.annotate.rows_per_file_batches))


def _init_worker(cfg_dict: dict, replicas: int) -> None:
    global _WORKER
    from skr_ray.tasks.ir.annotate import SelfAnnotator

    _WORKER = SelfAnnotator(cfg_dict, replicas)


def _label_block(block: dict) -> int:
    return len(_WORKER(block)["status"])


def run_side(side: str, out: str, rows: int, overrides: list[str]) -> dict:
    """One side, in this (fresh) process; its clock starts before anything side-specific is imported."""
    start = time.perf_counter()
    cfg = _config(out, rows, overrides)
    if side == "ray":
        from skr_ray.tasks.ir.annotate import run_annotation

        documents = run_annotation(cfg)["documents_labelled"]
    else:
        import multiprocessing as mp

        cfg_dict = {**cfg.to_dict(), "output_dir": str(Path(out).resolve())}
        blocks = _blocks(cfg)
        procs = 1 if side == "plain-1x2" else 2
        if procs == 1:
            _init_worker(cfg_dict, 1)
            documents = sum(_label_block(b) for b in blocks) // cfg.annotate.questions_per_doc
        else:
            with mp.get_context("spawn").Pool(procs, _init_worker, (cfg_dict, procs)) as pool:
                documents = sum(pool.imap(_label_block, blocks, chunksize=1)) // cfg.annotate.questions_per_doc
        documents //= max(1, len(cfg.annotate.label_kinds))
    return {"side": side, "seconds": time.perf_counter() - start, "documents": documents}


def read_side_labels(out: str) -> dict[tuple[str, int], tuple[str, str, str]]:
    from skr_ray.annotate.labelstore import read_labels
    from skr_ray.artifacts import Artifacts

    t = read_labels(Artifacts(out).labels_dir, quarantine=False,
                    columns=["doc_id", "label_index", "raw_output", "label", "status"]).to_pylist()
    return {(r["doc_id"], r["label_index"]): (r["raw_output"], r["label"], r["status"]) for r in t}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--actors", type=int, default=0, help="the Ray side's replicas (0: one per core, as configured)")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # one side, in a child process
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.actors:
        args.overrides.append(f"annotate.num_actors={args.actors}")
    if args.side:
        print("RESULT " + json.dumps(run_side(args.side, args.out, args.rows, args.overrides)), flush=True)
        return

    root = Path(tempfile.mkdtemp(prefix="skr-bench-annotate-"))
    results: dict[str, list[float]] = {s: [] for s in SIDES}
    reference, mismatches = None, {}
    for rep in range(args.repeats):
        for side in SIDES if rep % 2 == 0 else SIDES[::-1]:
            out = root / f"{side}-{rep}"
            proc = subprocess.run([sys.executable, __file__, "--side", side, "--out", str(out), "--rows",
                                   str(args.rows), *args.overrides], capture_output=True, text=True,
                                  env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                sys.exit(f"{side} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            r = json.loads(line[len("RESULT "):])
            results[side].append(r["documents"] / r["seconds"])
            labels = read_side_labels(str(out))
            if reference is None:
                reference = labels
            diff = sum(1 for k in reference.keys() | labels.keys() if reference.get(k) != labels.get(k))
            mismatches[side] = mismatches.get(side, 0) + diff
            print(f"repeat {rep + 1} {side:10s}: {r['documents']} documents in {r['seconds']:.1f} s "
                  f"= {results[side][-1]:.3f} rows/s; label rows differing from the first side's: {diff}",
                  flush=True)
            shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)

    med = {s: statistics.median(v) for s, v in results.items()}
    best = max(("plain-1x2", "plain-2x1"), key=med.get)
    print(f"\ncores={os.cpu_count()} rows={args.rows} repeats={args.repeats} overrides={args.overrides}")
    for s in SIDES:
        print(f"{s:10s}: median {med[s]:.3f} rows/s (min {min(results[s]):.3f}, max {max(results[s]):.3f}); "
              f"label rows differing: {mismatches[s]}")
    print(f"ratio ray / best plain ({best}): {med['ray'] / med[best]:.2f}  "
          f"(ray / plain-1x2: {med['ray'] / med['plain-1x2']:.2f})")
    if any(mismatches.values()):
        sys.exit("the sides wrote different labels: their speeds are not comparable")


if __name__ == "__main__":
    main()
