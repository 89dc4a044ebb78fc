"""Annotate and index a corpus larger than the whole object store of the Ray instance they run on (its own,
started here with Ray's smallest store), and report what the driver held. Run by
tests/integration/test_small_object_store.py in a process of its own, since a Ray instance's store size is fixed
when it starts:

    python -m tests.integration.small_store_run OUT_DIR ROWS CHARS_PER_ROW [index]

(``index``: the index stage too, over the same corpus.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STORE_BYTES = 75 * 2**20  # Ray's minimum object store
WORDS = ["revenue", "income", "cash", "debt", "margin", "growth", "assets", "equity"]


def write_corpus(path: Path, rows: int, chars: int) -> int:
    """``rows`` long passages of the tiny model's words (unique ids); returns the file's size in bytes."""
    with path.open("w") as f:
        for i in range(rows):
            words = [WORDS[(i * 7 + j * (1 + i % 5)) % 8] for j in range(chars // 6)]
            f.write(json.dumps({"_id": f"p{i:06d}", "text": f"passage {i} " + " ".join(words)}) + "\n")
    return path.stat().st_size


def main(out: Path, rows: int, chars: int, index: bool = False) -> dict:
    import psutil
    import ray

    from skr_ray.config import load_config
    from skr_ray.tasks.ir.annotate import run_annotation
    from skr_ray.tasks.ir.index import run_index
    from skr_ray.ray_utils import PeakRSS, spilled_mib
    from tests.tiny import LOOSE_FILTERS, build_tiny_model, make_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    tiny = build_tiny_model(out / "tiny-model")
    ckpt = make_checkpoint(tiny, out / "tiny-checkpoint") if index else out / "tiny-checkpoint"
    corpus_bytes = write_corpus(out / "corpus.jsonl", rows, chars)
    ray.init(num_cpus=2, object_store_memory=STORE_BYTES, include_dashboard=False)
    cfg = load_config(None, [f"model.name_or_path={tiny}", f"output_dir={out / 'run'}",
                             f"data.unlabeled={out / 'corpus.jsonl'}", f"data.max_chars={2 * chars}",
                             "annotate.label_kinds=[question]", "annotate.max_input_tokens=24",
                             "annotate.max_new_tokens=2", "annotate.batch_size=64", "annotate.num_actors=2",
                             f"index.checkpoint={ckpt}", "evaluate.batch_size=64", "evaluate.max_length=24",
                             "index.shard_rows=500", *LOOSE_FILTERS])
    import faiss  # noqa: F401  (what the stages import on first use is not corpus held in the driver)
    import pyarrow.parquet  # noqa: F401
    import ray.data  # noqa: F401

    before = psutil.Process().memory_info().rss
    peak = PeakRSS()
    peak.start()
    annotated = run_annotation(cfg)
    after_annotation = peak.peak
    indexed = run_index(cfg) if index else {"vectors": None}
    report = {"corpus_bytes": corpus_bytes, "store_bytes": int(ray.cluster_resources()["object_store_memory"]),
              "labelled": annotated["documents_labelled"], "label_rows": annotated["label_rows"],
              "vectors": indexed["vectors"], "driver_growth_bytes": int(peak.stop() * 2**20 - before),
              "annotation_growth_bytes": after_annotation - before,
              "spilled_mib": spilled_mib()}  # spill is reported, not asserted: Ray may spill a block it
    # cannot fit, which costs time, not rows
    ray.shutdown()
    return report


if __name__ == "__main__":
    print("REPORT " + json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), "index" in sys.argv[4:])))
