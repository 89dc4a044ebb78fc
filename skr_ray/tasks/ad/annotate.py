"""`skr annotate` for AD: pairs from IR self-annotations, judged yes/no by the base model on Ray Data.

Resumable like IR annotation: judged pairs are written to parquet block by block; a re-run skips
every pair id already on disk. Unparseable answers are kept with their status and counted, and
excluded from training.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from skr_ray.artifacts import Artifacts, StageError, skip_if_done, write_json
from skr_ray.config import SKRConfig, from_dict
from skr_ray.ray_utils import actor_pool

log = logging.getLogger(__name__)


def questions_dir(cfg: SKRConfig) -> Path:
    """Where the IR self-labels that seed the pairs live (an existing run, or OUTPUT_DIR/questions)."""
    if cfg.ad.questions_from:
        root = Path(cfg.ad.questions_from).expanduser()
        for candidate in (Artifacts(root).labels_dir, root / "labels", root):
            if candidate.is_dir() and any(candidate.glob("*.parquet")):
                return candidate
        raise FileNotFoundError(f"ad.questions_from={root}: no IR label parquet files found there")
    return Artifacts(Path(cfg.output_dir) / "questions").labels_dir


def _ensure_questions(cfg: SKRConfig) -> Path:
    if cfg.ad.questions_from:
        return questions_dir(cfg)
    from skr_ray.tasks.ir.annotate import run_annotation

    ir_cfg = from_dict({**cfg.to_dict(), "task": "ir", "output_dir": str(Path(cfg.output_dir) / "questions"),
                        "evaluate": {**cfg.to_dict()["evaluate"], "systems": []}})
    log.info("AD pairs need self-written questions: running IR self-annotation into %s", ir_cfg.output_dir)
    run_annotation(ir_cfg)
    return questions_dir(cfg)


def read_judgements(labels_dir: Path, quarantine: bool = True) -> list[dict[str, Any]]:
    """Every readable judged pair (one row per pair id); unreadable files are set aside and redone."""
    from skr_ray.annotate.labelstore import read_rows_by_key

    return read_rows_by_key(labels_dir, "pair_id", quarantine)


def summarize(rows: list[dict[str, Any]], total: int) -> dict[str, Any]:
    statuses = Counter(r["status"] for r in rows)
    ok = [r for r in rows if r["status"] == "ok"]
    pos = sum(1 for r in ok if r["answer"] == 1)
    by_kind: dict[str, dict[str, int]] = {}
    for r in ok:
        k = by_kind.setdefault(r["kind"], {"yes": 0, "no": 0})
        k["yes" if r["answer"] == 1 else "no"] += 1
    return {
        "pairs": total,
        "judged": len(rows),
        "usable": len(ok),
        "status_counts": dict(sorted(statuses.items())),
        "class_balance": {"yes": pos, "no": len(ok) - pos, "yes_fraction": round(pos / len(ok), 4) if ok else None},
        "answers_by_pair_kind": by_kind,
    }


def write_source_labels(items: list[dict[str, Any]], labels_dir: Path) -> Path:
    """'source' self-labels: the question's own passage is answerable (1), the other passages are not (0), and
    neither is its own passage for an on-topic variant of the question (rewrite, rule_*: 0).

    The question was written by the model for its own passage (IR self-annotation), so the label is the
    model's own output, not a human one. Written like judged rows (same columns), in one file.
    """
    import pyarrow as pa

    rows = []
    for item in items:
        from skr_ray.tasks.ad.ontopic import ONTOPIC_KINDS

        if item["kind"] not in ("own", "hard", "easy", *ONTOPIC_KINDS):
            raise ValueError(f"pair {item['pair_id']}: kind {item['kind']!r} has no source label")
        rows.append(item | {"raw_output": "", "answer": int(item["kind"] == "own"), "p_yes": float("nan"),
                            "status": "ok", "seconds": 0.0})
    path = labels_dir / f"source-{len(list(labels_dir.glob('source-*.parquet'))):05d}.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    tmp.replace(path)
    return path


def _judge(cfg: SKRConfig, items: list[dict[str, Any]], art: Artifacts) -> None:
    """'judge' self-labels: the base model's greedy yes/no answer to every pair, on a Ray Data actor pool."""
    import ray.data

    from skr_ray.ray_utils import annotation_pool, blocks_for_actors
    from skr_ray.tasks.ad.scoring import PairScorer

    items.sort(key=lambda r: len(r["passage"]) + len(r["query"]), reverse=True)  # little padding
    a = cfg.annotate
    actors, gpus = annotation_pool(cfg)
    ds = blocks_for_actors(ray.data.from_items(items), a.batch_size * a.rows_per_file_batches)
    ds = ds.map_batches(
        PairScorer,
        fn_constructor_kwargs={"cfg_dict": cfg.to_dict(), "mode": "judge", "checkpoint": None,
                               "replicas": actors},
        batch_size=a.batch_size,
        compute=actor_pool(actors),
        num_cpus=a.num_cpus_per_actor,
        num_gpus=gpus,
    )
    ds.write_parquet(str(art.labels_dir), min_rows_per_file=1)


def _ontopic(cfg: SKRConfig, questions: list[tuple[str, str]], passages: dict[str, str], art: Artifacts
             ) -> tuple[list[tuple[int, str, str]], Counter]:
    """On-topic variants of the questions (skr_ray.tasks.ad.ontopic) from the configured sources."""
    from skr_ray.tasks.ad.ontopic import model_rewrites, rule_negatives

    if cfg.data.modality == "image" and cfg.ad.ontopic_sources:
        raise ValueError("ad.ontopic_sources works on text passages (data.modality=text)")
    out: list[tuple[int, str, str]] = []
    statuses: Counter = Counter()
    if "rules" in cfg.ad.ontopic_sources:
        found, counts = rule_negatives(questions, passages, list(cfg.ad.rules), cfg.seed)
        out += found
        statuses.update(counts)
    if "rewrite" in cfg.ad.ontopic_sources:
        import hashlib

        from skr_ray.config import annotator_model
        from skr_ray.models.backbone import model_id

        key = hashlib.sha256(repr((questions, model_id(annotator_model(cfg)))).encode()).hexdigest()[:12]
        found, counts = model_rewrites(cfg, questions, passages, art.annotate_dir / f"rewrites-{key}.parquet")
        out += found
        statuses.update(counts)
    return out, statuses


@skip_if_done("annotate")
def run_ad_annotation(cfg: SKRConfig) -> dict[str, Any]:
    from skr_ray.annotate.labelstore import read_labels
    from skr_ray.models.backbone import model_id
    from skr_ray.ray_utils import ensure_ray
    from skr_ray.schema import DOC_ID, TEXT
    from skr_ray.tasks.ad.pairs import build_pairs, read_questions
    from skr_ray.tasks.ad.scoring import generation_params

    art = Artifacts(cfg.output_dir)
    start = time.perf_counter()
    qdir = _ensure_questions(cfg)
    ensure_ray(cfg.ray)
    questions = read_questions(qdir, cfg.annotate.drop_duplicates)
    if not questions:
        raise FileNotFoundError(f"no usable self-written questions in {qdir}")
    if cfg.ad.max_questions and cfg.ad.max_questions < len(questions):
        questions = sorted(random.Random(cfg.seed).sample(questions, cfg.ad.max_questions))
    table = read_labels(qdir, quarantine=False)
    passages = {d: t for d, t in zip(table[DOC_ID].to_pylist(), table[TEXT].to_pylist()) if t and t.strip()}
    search = None
    if cfg.data.modality == "image":  # hard negatives by the images' OCR text (label-free)
        from skr_ray.evaluate.images import ocr_texts

        search = ocr_texts(passages, art.annotate_dir / "ocr.json")
    ontopic, ontopic_statuses = _ontopic(cfg, questions, passages, art)
    pairs = build_pairs(questions, passages, cfg.ad.hard_negatives, cfg.ad.easy_negatives, cfg.seed, search,
                        ontopic, cfg.ad.ontopic_negatives)
    log.info("%d questions x (1 own + %d hard + %d easy + up to %d on-topic) -> %d pairs over %d passages",
             len(questions), cfg.ad.hard_negatives, cfg.ad.easy_negatives,
             cfg.ad.ontopic_negatives if ontopic else 0, len(pairs), len(passages))

    existing = read_judgements(art.labels_dir)
    made_with = generation_params(cfg)
    stale = {r["generation"] for r in existing} - {made_with}
    if stale:
        raise ValueError(f"{art.labels_dir} holds labels made with {sorted(stale)[0]}, not with this config's "
                         f"{made_with}; use a new output_dir or delete the labels")
    done = {r["pair_id"] for r in existing}
    todo = [p for p in pairs if p.pair_id not in done]
    if done:
        log.info("resuming: %d of %d pairs already judged", len(done), len(pairs))
    Artifacts.write_config(art.annotate_dir, cfg)
    if todo:
        now = datetime.now(timezone.utc).isoformat()
        from dataclasses import replace

        from skr_ray.config import annotator_model

        from skr_ray.models.backbone import load_tokenizer, materialize
        from skr_ray.tasks.ad.prompts import prompt_version

        version = prompt_version(load_tokenizer(materialize(annotator_model(cfg))))  # chat, or few-shot records
        provenance = {"task": "ad", "prompt_version": version, "model_id": model_id(annotator_model(cfg)),
                      "generation": made_with, "annotated_at": now}
        items = [asdict(p) | provenance for p in todo]
        art.labels_dir.mkdir(parents=True, exist_ok=True)
        if cfg.ad.label_source == "source":
            write_source_labels(items, art.labels_dir)
        else:  # the judge is the annotator (annotate.model, else the learner)
            _judge(replace(cfg, model=annotator_model(cfg)), items, art)
    rows = read_judgements(art.labels_dir)
    summary = summarize(rows, len(pairs))
    summary.update({"label_source": cfg.ad.label_source, "questions": len(questions), "questions_dir": str(qdir),
                    "pairs_by_kind": dict(sorted(Counter(p.kind for p in pairs).items())),
                    "ontopic_sources": list(cfg.ad.ontopic_sources), "ontopic_statuses": dict(sorted(
                        ontopic_statuses.items())),
                    "resumed_from_pairs": len(done),
                    "seconds": round(time.perf_counter() - start, 1)})
    write_json(art.annotate_summary, summary)
    missing = {p.pair_id for p in pairs} - {r["pair_id"] for r in rows}
    if missing:
        raise StageError(f"annotation judged {len(pairs) - len(missing)} of {len(pairs)} pairs; re-run to resume")
    Artifacts.mark_done(art.annotate_dir, {"pairs": len(pairs)})
    log.info("AD annotation done: %s", json.dumps(summary))
    return summary


