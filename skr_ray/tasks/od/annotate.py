"""`skr annotate task=od`: box self-annotation of page images, one search per page, on a Ray Data actor pool.

Each actor loads one model replica (or the scripted describer) and takes blocks of ``od.pages_per_block``
pages; it advances all their searches together (``search.run_searches``), so every model call is a batch of
crops from different pages. Resume and accounting are those of text annotation: each block's label file is
written by the actor that searched it (temp name, then rename), the actor journals the pages whose search
it starts, and a re-run skips the pages on disk (``documents_redone`` reports work a kill cost).
Self-annotation reads page images only: no annotation file is opened here (except the scripted oracle's).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from skr_ray.artifacts import Artifacts, StageError, skip_if_done, write_json
from skr_ray.config import SKRConfig, from_dict
from skr_ray.ray_utils import actor_pool

log = logging.getLogger(__name__)

OD_LABEL_SCHEMA = pa.schema(
    [
        ("page_id", pa.string()),
        ("image", pa.string()),  # path of the image or PDF the page comes from
        ("page", pa.int32()),  # PDF page index (0-based), -1 for image files
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("strategy", pa.string()),
        ("box", pa.list_(pa.float32())),  # normalized x0, y0, x1, y1; empty unless status is ok
        ("status", pa.string()),
        ("parts", pa.string()),  # JSON: what each sub-question gave
        ("trace", pa.string()),  # JSON: every step (crop, answer, similarity, decision)
        ("asks", pa.int32()),
        ("task", pa.string()),
        ("prompt_version", pa.string()),
        ("model_id", pa.string()),
        ("generation", pa.string()),
        ("annotated_at", pa.string()),
        ("node_id", pa.string()),
    ]
)


def make_asker(cfg: SKRConfig, device: str = "cpu", checkpoint: str | None = None) -> Any:
    """Who answers the strategies' questions: the base model, a checkpoint that answers as text (the SFT
    baseline), or the scripted describer."""
    if checkpoint is not None:
        from skr_ray.models.checkpoint import load_skr_model
        from skr_ray.tasks.od.ask import ModelAsker

        skr = load_skr_model(checkpoint, device)
        return ModelAsker(skr.model, skr.tokenizer, f"{checkpoint} (SFT)", cfg.od.max_new_tokens, cfg.od.target, device)
    if cfg.od.asker == "scripted":
        from skr_ray.tasks.od.scripted import ScriptedDescriber

        if not cfg.od.scripted_truth:
            raise ValueError("od.asker=scripted needs od.scripted_truth (an annotations.json to answer from)")
        return ScriptedDescriber(cfg.od.scripted_truth, cfg.od.scripted_noise, cfg.seed)
    from skr_ray.models.backbone import load_backbone, model_id
    from skr_ray.tasks.od.ask import ModelAsker

    from skr_ray.config import annotator_model

    annotator = annotator_model(cfg)  # the learner itself unless annotate.model is set
    model, processor = load_backbone(annotator, device=device)
    return ModelAsker(model, processor, model_id(annotator), cfg.od.max_new_tokens, cfg.od.target, device)


def needs_similarity(cfg: SKRConfig) -> bool:
    return cfg.od.strategy == "fuzzy" or (cfg.od.strategy == "ocr" and cfg.od.ocr_object == "fuzzy")


def generation_params(cfg: SKRConfig) -> str:
    o = cfg.od
    return json.dumps({"strategy": o.strategy, "asker": o.asker, "greedy": True, "max_new_tokens": o.max_new_tokens,
                       "similarity": o.similarity if needs_similarity(cfg) else None,
                       "similarity_threshold": o.similarity_threshold, "min_step_px": o.min_step_px,
                       "ocr_object": o.ocr_object, "ocr_min_score": o.ocr_min_score,
                       "scripted_noise": o.scripted_noise if o.asker == "scripted" else None}, sort_keys=True)


class PageSearcher:
    """Ray Data UDF: one asker (model replica) in __init__; a block of pages searched together in __call__."""

    def __init__(self, cfg_dict: dict[str, Any], replicas: int, labels_dir: str, journal_dir: str,
                 checkpoint: str | None = None) -> None:
        import torch

        from skr_ray.annotate.labelstore import node_id
        from skr_ray.models.backbone import set_threads
        from skr_ray.tasks.od.similarity import load_similarity
        from skr_ray.tasks.od.strategies import strategy

        self.cfg = cfg = from_dict(cfg_dict)
        set_threads(cfg.model, replicas)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.asker = make_asker(cfg, device, checkpoint)
        similarity = load_similarity(cfg.od.similarity) if needs_similarity(cfg) else None
        self.start = strategy(cfg.od.strategy, cfg.od, similarity)
        self.node_id = node_id()
        self.labels_dir = Path(labels_dir)
        self.labels_dir.mkdir(parents=True, exist_ok=True)
        Path(journal_dir).mkdir(parents=True, exist_ok=True)
        self.journal = Path(journal_dir) / f"{self.node_id[:12] or 'local'}-{os.getpid()}.txt"
        self.gen_params = generation_params(cfg)
        from skr_ray.tasks.od.prompts import PROMPT_VERSION

        self.prompt_version = PROMPT_VERSION

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from skr_ray.annotate.labelstore import write_label_file
        from skr_ray.pages import PageRef, load_page
        from skr_ray.tasks.od.search import PageInfo, PageLabel, SearchStats, run_searches

        refs = [PageRef(str(i), str(p), int(n)) for i, p, n in zip(batch["page_id"], batch["path"], batch["page"])]
        with self.journal.open("a") as f:  # pages whose search starts now; twice = work redone
            f.write("".join(f"{r.page_id}\n" for r in refs))
        infos: dict[int, PageInfo] = {}
        broken: dict[int, str] = {}
        for i, ref in enumerate(refs):
            try:
                image = load_page(ref)
                infos[i] = PageInfo(ref.page_id, image.width, image.height, image)
            except ValueError as exc:  # a corrupt file is counted with its path; the job goes on
                broken[i] = str(exc)
        if hasattr(self.asker, "pages"):
            self.asker.pages = {p.page_id: p.image for p in infos.values()}
        stats = SearchStats()
        order = sorted(infos)
        labels = dict(zip(order, run_searches([lambda p=infos[i]: self.start(p) for i in order], self.asker,
                                              self.cfg.annotate.batch_size, stats)))
        now = datetime.now(timezone.utc).isoformat()
        rows: dict[str, list] = {name: [] for name in OD_LABEL_SCHEMA.names}
        for i, ref in enumerate(refs):
            label = labels.get(i) or PageLabel(None, "unreadable", parts={"error": broken.get(i, "")})
            info = infos.get(i)
            values = {"page_id": ref.page_id, "image": ref.path, "page": ref.page,
                      "width": info.width if info else 0, "height": info.height if info else 0,
                      "strategy": self.cfg.od.strategy, "box": [float(v) for v in label.box] if label.box else [],
                      "status": label.status, "parts": json.dumps(label.parts), "trace": json.dumps(label.trace),
                      "asks": label.asks, "task": "od", "prompt_version": self.prompt_version,
                      "model_id": self.asker.model_id, "generation": self.gen_params, "annotated_at": now,
                      "node_id": self.node_id}
            for name, value in values.items():
                rows[name].append(value)
        write_label_file(self.labels_dir, rows, OD_LABEL_SCHEMA)
        if hasattr(self.asker, "pages"):
            self.asker.pages = {}  # the block's images are not kept
        return {"page_id": rows["page_id"], "status": rows["status"], "model_calls": [stats.model_calls] + [0] * (len(refs) - 1),
                "seconds": [stats.seconds] + [0.0] * (len(refs) - 1)}


def read_page_labels(labels_dir: Path, quarantine: bool = True) -> list[dict[str, Any]]:
    """Every readable page label (one per page id); unreadable files are set aside and their pages redone."""
    from skr_ray.annotate.labelstore import read_rows_by_key

    return read_rows_by_key(labels_dir, "page_id", quarantine)


def search_pages(cfg: SKRConfig, pages: list[Any], out_dir: Path, desc: str, checkpoint: str | None = None) -> dict[str, Any]:
    """Search every page not yet labelled under ``out_dir`` (labels/, journal/); returns run statistics.

    Shared by self-annotation and by the evaluation of the base model's strategies.
    """
    import ray.data
    from tqdm.auto import tqdm

    from skr_ray.annotate.labelstore import journal_totals
    from skr_ray.ray_utils import annotation_pool, blocks_for_actors

    labels_dir, journal_dir = out_dir / "labels", out_dir / "journal"
    for stale in labels_dir.glob("*.parquet.tmp") if labels_dir.is_dir() else []:
        stale.unlink()  # a block being written when an earlier run died: redone below
    existing = read_page_labels(labels_dir)
    stale_params = {r["generation"] for r in existing} - {generation_params(cfg)}
    if stale_params:
        raise ValueError(f"{labels_dir} holds labels made with {sorted(stale_params)[0]}, not with this config's "
                         f"{generation_params(cfg)}; use a new output_dir or delete the labels")
    done = {r["page_id"] for r in existing}
    todo = [p.to_dict() for p in pages if p.page_id not in done]
    if done:
        log.info("resuming: %d of %d pages already searched", len(done), len(pages))
    calls, seconds = 0, 0.0
    if todo:
        a, o = cfg.annotate, cfg.od
        actors, gpus = annotation_pool(cfg)
        ds = blocks_for_actors(ray.data.from_items(todo), o.pages_per_block)
        ds = ds.map_batches(
            PageSearcher,
            fn_constructor_kwargs={"cfg_dict": cfg.to_dict(), "replicas": actors,
                                   "labels_dir": str(labels_dir.resolve()), "journal_dir": str(journal_dir.resolve()),
                                   "checkpoint": checkpoint},
            batch_size=o.pages_per_block,
            compute=actor_pool(actors),
            num_cpus=a.num_cpus_per_actor,
            num_gpus=gpus,
            **({"scheduling_strategy": "SPREAD"} if actors > 1 else {}),
        )
        with tqdm(total=len(todo), desc=desc, unit="page", mininterval=10) as bar:
            for block in ds.iter_batches(batch_size=None, batch_format="numpy"):
                calls += int(np.sum(block["model_calls"]))
                seconds += float(np.sum(block["seconds"]))
                bar.update(len(block["page_id"]))
    rows = read_page_labels(labels_dir)
    generated, redone = journal_totals(journal_dir)
    return {"rows": rows, "pages_searched_this_run": len(todo), "resumed_from_pages": len(done),
            "model_calls_this_run": calls, "search_seconds_this_run": round(seconds, 2),
            "documents_generated": generated, "documents_redone": redone}


def summarize(rows: list[dict[str, Any]], pages: int, problems: list[str]) -> dict[str, Any]:
    statuses = Counter(r["status"] for r in rows)
    asks = [r["asks"] for r in rows if r["status"] != "unreadable"]
    return {
        "pages": pages,
        "pages_labelled": len(rows),
        "usable": statuses.get("ok", 0),
        "status_counts": dict(sorted(statuses.items())),
        "asks_per_page": round(sum(asks) / len(asks), 2) if asks else 0.0,
        "unreadable": sorted([r["image"] for r in rows if r["status"] == "unreadable"] + problems),
    }


@skip_if_done("annotate")
def run_od_annotation(cfg: SKRConfig) -> dict[str, Any]:
    from skr_ray.pages import list_pages
    from skr_ray.ray_utils import ensure_ray

    art = Artifacts(cfg.output_dir)
    check_inputs(cfg)
    pages, problems = list_pages(cfg.data.unlabeled, cfg.data.max_docs)  # bad input fails before Ray starts
    ensure_ray(cfg.ray)
    start = time.perf_counter()
    Artifacts.write_config(art.annotate_dir, cfg)
    run = search_pages(cfg, pages, art.annotate_dir, f"box self-annotation ({cfg.od.strategy})")
    rows = run.pop("rows")
    summary = summarize(rows, len(pages), problems)
    summary.update({k: v for k, v in run.items()})
    summary.update({"strategy": cfg.od.strategy, "asker": cfg.od.asker, "seconds": round(time.perf_counter() - start, 1)})
    if run["pages_searched_this_run"]:
        summary["model_calls_per_page"] = round(run["model_calls_this_run"] / run["pages_searched_this_run"], 3)
    write_json(art.annotate_summary, summary)
    missing = {p.page_id for p in pages} - {r["page_id"] for r in rows}
    if missing:
        raise StageError(f"annotation searched {len(pages) - len(missing)} of {len(pages)} pages; re-run to resume")
    Artifacts.mark_done(art.annotate_dir, {"pages": len(pages)})
    log.info("OD annotation done: %s", json.dumps({k: v for k, v in summary.items() if k != "unreadable"}))
    return summary


def check_inputs(cfg: SKRConfig) -> None:
    """Fail before any work on what cannot run: a text backbone asked to look at pages, a missing oracle file."""
    from skr_ray.corpus import CorpusError

    if cfg.data.unlabeled == "demo":
        raise CorpusError("task=od reads page images: set data.unlabeled to a folder of page images or PDFs "
                          "(e.g. ../shared/data/docpages)")
    if cfg.od.asker == "scripted" and not (cfg.od.scripted_truth and Path(cfg.od.scripted_truth).exists()):
        raise FileNotFoundError(f"od.asker=scripted needs od.scripted_truth; not found: {cfg.od.scripted_truth}")
    if cfg.od.asker == "model":
        from skr_ray.models.backbone import require_vision_model

        require_vision_model(cfg.model, "task=od", NO_VLM_HINT)


NO_VLM_HINT = (" (set model.name_or_path to one: Qwen2-VL, LLaVA-1.6, Phi-3-V, Gemma-3. Without one, "
               "`skr tiny-vlm` builds a tiny random Gemma-3 that shows every OD stage run, with the answers from "
               "od.asker=scripted: see README, \"OD without a vision-language model\")")


def check_stages(cfg: SKRConfig, stages: tuple[str, ...]) -> None:
    """Before any stage starts: annotation's inputs, and a vision-language model for every stage that reads
    pages with the backbone (training and evaluation always do; annotation unless the scripted describer
    answers for it)."""
    if "annotate" in stages:
        check_inputs(cfg)
    if {"train", "evaluate"} & set(stages):
        from skr_ray.models.backbone import require_vision_model

        require_vision_model(cfg.model, "task=od " + "/".join(s for s in stages if s != "annotate"), NO_VLM_HINT)
