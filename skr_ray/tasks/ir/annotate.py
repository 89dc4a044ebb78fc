"""`skr annotate` for IR (and the questions AD's pairs start from): shard the corpus over an actor pool of model
replicas with Ray Data; the model writes questions (or the other label kinds) for its own passages.

Resumable by construction: each actor writes the label file of every block it finishes itself
(atomically: temp name, then rename), so a row is on disk the moment its block is labelled. A killed
run loses only the blocks being generated at that moment; a re-run reads what is there, skips those
doc ids and labels only the rest. Each actor journals the doc ids whose generation it starts, so the
summary can say how much work a kill (or a lost actor) cost: ``documents_redone``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from skr_ray.annotate.labelstore import (iter_label_files, journal_totals, label_columns, labelled_doc_ids,
                                        labelled_requests, node_id, write_label_file)
from skr_ray.artifacts import Artifacts, StageError, skip_if_done, write_json
from skr_ray.config import SKRConfig, from_dict
from skr_ray.corpus import READ_CPUS, done_keys, drop_done, longest_first, read_corpus, resolve_corpus, validate_corpus
from skr_ray.ray_utils import actor_pool
from skr_ray.schema import DOC_ID, LABEL_SCHEMA, TEXT
from skr_ray.tasks.ir.labels import QuestionFilter, normalize_for_dedup, parse_label

log = logging.getLogger(__name__)


class PromptTooLong(ValueError):
    """A prompt that leaves no room for the generation budget in the model's context."""


class SelfAnnotator:
    """Ray Data UDF: loads one model replica in __init__, labels a batch of documents in __call__."""

    def __init__(self, cfg_dict: dict[str, Any], replicas: int) -> None:
        import torch

        from skr_ray.annotate.generation import GenerationEngine
        from skr_ray.models.backbone import load_backbone, model_id, set_threads
        from skr_ray.tasks.ir.prompts import EXAMPLE_QUESTION

        self.cfg = from_dict(cfg_dict)
        from skr_ray.config import annotator_model

        annotator = annotator_model(self.cfg)  # the learner itself unless annotate.model is set
        set_threads(annotator, replicas)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model, tokenizer = load_backbone(annotator, device=device)
        a = self.cfg.annotate
        self.images = self.cfg.data.modality == "image"
        if self.images:  # image documents: the question is written from the image alone
            from skr_ray.models.common import text_tokenizer

            self.model, self.processor, self.device = model, tokenizer, device
            tokenizer = text_tokenizer(tokenizer)
        self.engine = GenerationEngine(model, tokenizer, a.max_input_tokens, a.max_new_tokens, device)
        base_filter = QuestionFilter(
            a.min_words, a.max_words, a.max_copy_ratio, a.require_question_mark,
            echo_of=(EXAMPLE_QUESTION,),
        )
        from skr_ray.tasks.ir.labels import kind_filter
        from skr_ray.tasks.ir.prompts import IMAGE_PROMPT_VERSION, kind_prompt_version

        # k-th label of a document: kind label_kinds[k // questions_per_doc], greedy first then sampled
        self.kinds = ["question"] if self.images else list(a.label_kinds)
        from skr_ray.tasks.ir.prompts import resolve_style

        self.style = "chat" if self.images else resolve_style(a.prompt_style, tokenizer)
        self.filters = {k: kind_filter(k, base_filter, self.style) for k in self.kinds}
        self.model_id = model_id(annotator)
        self.learner_id = model_id(self.cfg.model)
        self.prompt_versions = {k: IMAGE_PROMPT_VERSION if self.images else kind_prompt_version(k, self.style)
                                for k in self.kinds}
        self.node_id = node_id()
        art = Artifacts(self.cfg.output_dir)
        art.annotate_journal.mkdir(parents=True, exist_ok=True)
        art.labels_dir.mkdir(parents=True, exist_ok=True)
        self.labels_dir = art.labels_dir
        self.journal = art.annotate_journal / f"{self.node_id[:12] or 'local'}-{os.getpid()}.txt"
        self.gen_params = json.dumps(
            {
                "max_new_tokens": a.max_new_tokens,
                "max_input_tokens": a.max_input_tokens,
                "greedy_first": True,
                "sample_temperature": a.sample_temperature if a.questions_per_doc > 1 else None,
                "seed": self.cfg.seed,
            }
        )

    def _generate(self, texts: list[str]) -> list[list[str]]:
        if self.images:
            return [[q] for q in self._generate_on_images(texts)]
        from skr_ray.tasks.ir.prompts import (FEWSHOT_STOP, build_kind_messages, fewshot_avoid, fewshot_opening,
                                              fewshot_prompt)

        a = self.cfg.annotate
        outs: list[list[str]] = [[] for _ in texts]
        cut = [self.engine.truncate(t) for t in texts]
        for kind in self.kinds:
            if self.style == "fewshot":
                prompts = [fewshot_prompt(t, kind) for t in cut]
                opening = fewshot_opening(kind) if a.reuse_opening else None
                stop, avoid = FEWSHOT_STOP, [fewshot_avoid(t, kind) for t in cut]
            else:
                messages = [build_kind_messages(t, kind) for t in cut]
                prompts = [self.engine.render(m) for m in messages]
                opening = self.engine.render_opening(messages[0]) if a.reuse_opening and messages else None
                stop, avoid = None, None
            too_long = self.engine.too_long(prompts)
            if any(too_long):  # counted with status too_long; never sent to the model
                if len(texts) == 1:
                    raise PromptTooLong(f"prompt longer than the model's context ({self.engine.context} tokens "
                                        f"with {a.max_new_tokens} new)")
                raise PromptTooLong("a prompt of this batch is too long")  # _label retries row by row
            greedy = self.engine.generate(prompts, opening=opening, stop=stop, avoid=avoid)
            if a.questions_per_doc > 1:
                extra = self.engine.generate(
                    prompts, a.questions_per_doc - 1, a.sample_temperature, seed=self.cfg.seed, opening=opening,
                    stop=stop, avoid=avoid,
                )
                greedy = [o + e for o, e in zip(greedy, extra)]
            outs = [o + g for o, g in zip(outs, greedy)]
        return outs

    def _generate_on_images(self, refs: list[str]) -> list[str]:
        from skr_ray.models.vision import generate_on_images, render_image_prompts
        from skr_ray.pages import load_page
        from skr_ray.tasks.ir.prompts import IMAGE_ASK

        images = [load_page(r) for r in refs]  # a corrupt file fails its row: status error
        prompts = render_image_prompts(self.processor, [IMAGE_ASK] * len(images))
        return generate_on_images(self.model, self.processor, images, prompts, self.cfg.annotate.max_new_tokens,
                                  self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        """Label one block (``rows_per_file_batches`` generate() calls), write it as one file."""
        ids = [str(x) for x in batch[DOC_ID]]
        texts = ["" if t is None else str(t) for t in batch[TEXT]]
        self._record(ids)
        rows: dict[str, list] = {name: [] for name in LABEL_SCHEMA.names}
        step = self.cfg.annotate.batch_size
        for start in range(0, len(ids), step):
            for name, values in self._label(ids[start : start + step], texts[start : start + step]).items():
                rows[name].extend(values)
        write_label_file(self.labels_dir, rows)
        return {DOC_ID: rows[DOC_ID], "status": rows["status"]}

    def _label(self, ids: list[str], texts: list[str]) -> dict[str, list]:
        todo = [i for i, t in enumerate(texts) if t.strip()]
        outputs: dict[int, list[str] | Exception] = {}
        try:
            for i, out in zip(todo, self._generate([texts[i] for i in todo])):
                outputs[i] = out
        except Exception as exc:  # noqa: BLE001 - isolate the failing row, keep the rest
            if not isinstance(exc, PromptTooLong):
                log.exception("batch generation failed; retrying rows one by one")
            for i in todo:
                try:
                    outputs[i] = self._generate([texts[i]])[0]
                except Exception as exc:  # noqa: BLE001
                    outputs[i] = exc
        now = datetime.now(timezone.utc).isoformat()
        rows: dict[str, list] = {name: [] for name in LABEL_SCHEMA.names}
        per_kind = self.cfg.annotate.questions_per_doc
        for i, (doc_id, text) in enumerate(zip(ids, texts)):
            result = outputs.get(i)
            for k in range(per_kind * len(self.kinds)):
                kind = self.kinds[k // per_kind]
                if i not in outputs:
                    raw, label, status = "", "", "empty_input"
                elif isinstance(result, PromptTooLong):
                    raw, label, status = str(result), "", "too_long"
                elif isinstance(result, Exception):
                    raw, label, status = f"{type(result).__name__}: {result}", "", "error"
                else:
                    raw = result[k] if k < len(result) else ""
                    label, status = parse_label(raw, "" if self.images else text, self.filters[kind], kind)
                rows[DOC_ID].append(doc_id)
                rows["label_index"].append(k)
                rows[TEXT].append(text)
                rows["raw_output"].append(raw)
                rows["label"].append(label)
                rows["status"].append(status)
                rows["task"].append(self.cfg.task)
                rows["prompt_version"].append(self.prompt_versions[kind])
                rows["label_kind"].append(kind)
                rows["model_id"].append(self.model_id)
                rows["learner_model_id"].append(self.learner_id)
                rows["generation"].append(self.gen_params)
                rows["annotated_at"].append(now)
                rows["node_id"].append(self.node_id)
        return rows

    def _record(self, ids: list[str]) -> None:
        """Journal the doc ids whose generation starts now. Ids journalled twice are work done twice
        (a block lost to a kill, redone by a resume or by Ray Data's retry on a new actor)."""
        with self.journal.open("a") as f:
            f.write("".join(f"{i}\n" for i in ids))


def final_statuses(table: pa.Table, enabled: bool = True) -> pa.Array:
    """Final status per row, as an Arrow array: 'ok' rows whose question repeats an earlier one (in
    (doc id, label index) order) become 'duplicate'. Computed in Arrow with the normalized questions built a
    slice at a time, so a million labels cost the driver tens of MB, not Python tuples and sets of them."""
    import pyarrow.compute as pc

    status = table["status"].combine_chunks()
    if not enabled or not len(table):
        return status
    ok_rows = np.flatnonzero(pc.fill_null(pc.equal(status, "ok"), False).to_numpy(zero_copy_only=False))
    if not len(ok_rows):
        return status
    labels, step = table["label"], 65536
    keys = pa.chunked_array(
        [pa.array([normalize_for_dedup(x) for x in labels.take(ok_rows[i : i + step]).to_pylist()], pa.string())
         for i in range(0, len(ok_rows), step)], pa.string())
    order = pc.sort_indices(table.select([DOC_ID, "label_index"]).take(ok_rows),
                            [(DOC_ID, "ascending"), ("label_index", "ascending")]).to_numpy()  # stable
    rank = np.empty(len(ok_rows), dtype=np.int64)
    rank[order] = np.arange(len(ok_rows))
    first = pa.table({"key": keys, "rank": rank}).group_by("key", use_threads=False).aggregate([("rank", "min")])
    repeated = np.ones(len(ok_rows), dtype=bool)
    repeated[order[first.column("rank_min").to_numpy()]] = False
    if not repeated.any():
        return status
    out = status.to_numpy(zero_copy_only=False).astype(object)
    out[ok_rows[repeated]] = "duplicate"
    return pa.array(out, pa.string())


def mark_duplicates(table: pa.Table, enabled: bool = True) -> list[str]:
    """Final status per row: 'ok' rows whose question repeats an earlier one become 'duplicate'."""
    return final_statuses(table, enabled).to_pylist()


def summarize(table: pa.Table, corpus_rows: int, labels_per_doc: int, dedup: bool = True) -> dict[str, Any]:
    import pyarrow.compute as pc

    statuses = final_statuses(table, dedup)
    counts = {d["values"]: d["counts"] for d in pc.value_counts(statuses).to_pylist()}
    ok = pc.fill_null(pc.equal(statuses, "ok"), False)
    kinds = pc.fill_null(table["label_kind"].combine_chunks(), "question").filter(ok)
    kinds = pc.if_else(pc.equal(kinds, ""), "question", kinds)
    per_kind = {d["values"]: d["counts"] for d in pc.value_counts(kinds).to_pylist()}
    return {
        "corpus_rows": corpus_rows,
        "documents_labelled": pc.count_distinct(table[DOC_ID]).as_py() if len(table) else 0,
        "label_rows": len(table),
        "expected_label_rows": corpus_rows * labels_per_doc,
        "usable": counts.get("ok", 0),
        "usable_per_kind": dict(sorted(per_kind.items())),
        "status_counts": dict(sorted(counts.items())),
    }


def summarize_labels(labels_dir: Path, corpus_rows: int, labels_per_doc: int, dedup: bool = True) -> dict[str, Any]:
    """``summarize(read_labels(labels_dir, columns=[label, status, label_kind]), ...)`` without holding the labels.

    One label file is read at a time; per row the driver keeps 64-bit hashes of its doc id, of its key (doc id,
    label index) and of its normalized question (usable rows only), and two small codes: about 30 bytes a row,
    where the table and its dedup took about 370 at a million rows. Documents are counted by their ids' hashes
    (two ids with one hash among a million: about 3e-8). Rows whose hashes repeat (a row written twice by a
    killed run and its resume; equal questions) are settled exactly by a second read that keeps only those rows:
    the first row per key in file order stays, and of equal questions the first in (doc id, label index) order.
    """
    from collections import Counter

    names = label_columns(["label", "status", "label_kind"])
    codes: dict[str, dict[Any, int]] = {"status": {}, "kind": {}}

    def code(kind: str, value: Any) -> int:
        return codes[kind].setdefault(value, len(codes[kind]))

    doc_keys, row_keys, question_keys, status_codes, kind_codes = [], [], [], [], []
    for _, table in iter_label_files(labels_dir, names, quarantine=True):
        cols = {n: table[n].to_pylist() for n in (DOC_ID, "label_index", "label", "status", "label_kind")}
        n = len(table)
        doc_keys.append(np.fromiter((hash(d) for d in cols[DOC_ID]), np.int64, n))
        row_keys.append(np.fromiter((hash(k) for k in zip(cols[DOC_ID], cols["label_index"])), np.int64, n))
        status_codes.append(np.fromiter((code("status", x) for x in cols["status"]), np.int32, n))
        kind_codes.append(np.fromiter((code("kind", x or "question") for x in cols["label_kind"]), np.int32, n))
        question_keys.append(np.fromiter((hash(normalize_for_dedup(q)) if st == "ok" else 0
                                          for q, st in zip(cols["label"], cols["status"])), np.int64, n))
    if not row_keys:
        return summarize(LABEL_SCHEMA.empty_table().select(names), corpus_rows, labels_per_doc, dedup)
    rk, qk = np.concatenate(row_keys), np.concatenate(question_keys)
    st, kd = np.concatenate(status_codes), np.concatenate(kind_codes)
    documents = len(np.unique(np.concatenate(doc_keys)))
    del doc_keys, row_keys, question_keys, status_codes, kind_codes
    ok = st == codes["status"]["ok"] if "ok" in codes["status"] else np.zeros(len(st), bool)

    def repeated(values: np.ndarray) -> np.ndarray:
        uniq, counts = np.unique(values, return_counts=True)
        return uniq[counts > 1]

    twice_rows = repeated(rk)
    equal_questions = repeated(qk[ok]) if dedup else np.empty(0, np.int64)
    in_group = ok & np.isin(qk, equal_questions) if len(equal_questions) else np.zeros(len(qk), bool)
    kept = np.ones(len(rk), bool)
    firsts: dict[str, tuple[tuple[Any, Any], int]] = {}  # normalized question -> (its first key, kind code)
    grouped = 0  # usable rows in groups of equal question hashes, after the first-per-key rule
    if len(twice_rows) or len(equal_questions):
        twice, seen, at = set(twice_rows.tolist()), set(), 0
        for _, table in iter_label_files(labels_dir, names, quarantine=False):
            n = len(table)
            rows = np.flatnonzero(np.isin(rk[at : at + n], twice_rows) | in_group[at : at + n])
            if len(rows):
                sub = table.take(rows)
                for r, doc, index, label in zip(rows.tolist(), sub[DOC_ID].to_pylist(),
                                                sub["label_index"].to_pylist(), sub["label"].to_pylist()):
                    i = at + r
                    if int(rk[i]) in twice:
                        if (doc, index) in seen:
                            kept[i] = False  # a second copy of a row key: read_labels keeps the first
                            continue
                        seen.add((doc, index))
                    if in_group[i]:
                        grouped += 1
                        question = normalize_for_dedup(label)
                        if question not in firsts or (doc, index) < firsts[question][0]:
                            firsts[question] = ((doc, index), int(kd[i]))
            at += n
    names_of = {kind: {c: v for v, c in codes[kind].items()} for kind in codes}
    counts = Counter({names_of["status"][c]: int(k) for c, k in enumerate(np.bincount(st[kept]))})
    duplicates = grouped - len(firsts)
    if duplicates:
        counts["ok"] -= duplicates
        counts["duplicate"] += duplicates
    alone = kept & ok & ~in_group
    per_kind = Counter({names_of["kind"][c]: int(k) for c, k in enumerate(np.bincount(kd[alone]))})
    per_kind.update(names_of["kind"][k] for _, k in firsts.values())
    return {
        "corpus_rows": corpus_rows,
        "documents_labelled": documents,
        "label_rows": int(kept.sum()),
        "expected_label_rows": corpus_rows * labels_per_doc,
        "usable": counts.get("ok", 0),
        "usable_per_kind": dict(sorted((k, v) for k, v in per_kind.items() if v)),
        "status_counts": dict(sorted((k, v) for k, v in counts.items() if v)),
    }


def _drain(ds: Any, documents: int) -> None:
    from tqdm.auto import tqdm

    ok = 0
    with tqdm(total=documents, desc="self-annotation", unit="doc", mininterval=10) as bar:
        for block in ds.iter_batches(batch_size=None, batch_format="numpy"):
            ok += int(np.sum(block["status"] == "ok"))
            bar.update(len(set(str(x) for x in block[DOC_ID])))
            bar.set_postfix(ok=ok, refresh=False)


def _image_corpus(cfg: SKRConfig) -> list[Any]:
    """Image documents (data.modality=image): pages listed, a vision-language backbone checked."""
    from skr_ray.config import ConfigError
    from skr_ray.corpus import CorpusError
    from skr_ray.models.backbone import require_vision_model
    from skr_ray.pages import list_pages

    if cfg.data.unlabeled == "demo":
        raise CorpusError("data.modality=image: set data.unlabeled to a folder of images or PDFs, or a corpus.jsonl "
                          "of {\"_id\", \"image\"} rows (e.g. ../shared/data/charts/unlabeled)")
    if cfg.annotate.questions_per_doc != 1 or cfg.annotate.label_kinds != ["question"]:
        raise ConfigError("data.modality=image writes one question per image (annotate.questions_per_doc=1, "
                          "annotate.label_kinds=[question])")
    require_vision_model(cfg.model, "data.modality=image")
    pages, problems = list_pages(cfg.data.unlabeled, cfg.data.max_docs)
    for problem in problems:
        log.warning("image corpus: %s", problem)
    return pages


@skip_if_done("annotate")
def run_annotation(cfg: SKRConfig) -> dict[str, Any]:
    """Label every corpus row once (resuming if labels exist); return the summary."""
    import ray

    from skr_ray.ray_utils import actor_cpus, annotation_pool, ensure_ray

    art = Artifacts(cfg.output_dir)
    unreadable: list[str] = []
    if cfg.data.modality == "image":
        pages = _image_corpus(cfg)  # fail on bad input before starting Ray
    else:
        source = resolve_corpus(cfg.data.unlabeled)
        validate_corpus(source)  # fail on bad input before starting Ray
        unreadable = list(source.problems)
    ensure_ray(cfg.ray)
    start = time.perf_counter()
    a = cfg.annotate
    if cfg.data.modality == "image":
        import ray.data

        from skr_ray.pages import ref_to_text

        ds, total = ray.data.from_items([{DOC_ID: p.page_id, TEXT: ref_to_text(p)} for p in pages]), len(pages)
    else:
        ds, total = read_corpus(cfg.data.unlabeled, cfg.data.max_chars, cfg.data.max_docs)
    for stale in art.labels_dir.glob("*.parquet.tmp") if art.labels_dir.is_dir() else []:
        stale.unlink()  # a block that was being written when an earlier run died: redone below
    if a.engine == "vllm" and cfg.data.modality != "image":
        from skr_ray.tasks.ir.vllm_engine import annotate_with_vllm

        # documents with every label are dropped from the stream by id (Arrow arrays); only the few a killed
        # run left part-labelled reach the prompt builder as (document, label index) pairs
        done_ids, full_ids, partial = labelled_requests(art.labels_dir, a.questions_per_doc * len(a.label_kinds))
        Artifacts.write_config(art.annotate_dir, cfg)
        art.labels_dir.mkdir(parents=True, exist_ok=True)
        if len(full_ids) < total:
            if len(done_ids):
                log.info("resuming: %d of %d documents already labelled (%d in part)", len(done_ids), total,
                         len(done_ids) - len(full_ids))
            if len(full_ids):
                ds = ds.map_batches(drop_done, fn_kwargs={"done": done_keys(full_ids)}, num_cpus=READ_CPUS)
            _drain(annotate_with_vllm(cfg, ds, partial), total - len(done_ids))
        return _finish(cfg, art, total, done_ids, start, unreadable)
    done_ids = labelled_doc_ids(art.labels_dir)  # sorted, distinct: an Arrow array, not Python strings
    if len(done_ids):
        log.info("resuming: %d of %d documents already labelled", len(done_ids), total)
        ds = ds.map_batches(drop_done, fn_kwargs={"done": done_keys(done_ids)}, num_cpus=READ_CPUS)
    Artifacts.write_config(art.annotate_dir, cfg)
    remaining = total - len(done_ids)
    if remaining > 0:
        actors, gpus = annotation_pool(cfg)
        # One stream from the files to the label files: each read block (thousands of rows) is sorted by
        # length and cut, as it streams, into blocks of one actor call's rows, so calls pad little and every
        # actor gets work; nothing waits for the whole corpus and no stage holds it. The actors leave one CPU
        # to the read and cut tasks (actor_cpus).
        ds = ds.map_batches(longest_first, batch_size=None)  # one CPU: fused with the repartition's tasks
        ds = ds.repartition(target_num_rows_per_block=a.batch_size * a.rows_per_file_batches)
        ds = ds.map_batches(
            SelfAnnotator,
            # actors write under output_dir: absolute, since their working directory is not ours
            fn_constructor_kwargs={"cfg_dict": {**cfg.to_dict(), "output_dir": str(Path(cfg.output_dir).resolve())},
                                   "replicas": actors},
            batch_size=a.batch_size * a.rows_per_file_batches,
            compute=actor_pool(actors),
            num_cpus=actor_cpus(actors, a.num_cpus_per_actor, gpus),
            num_gpus=gpus,
            # one replica per node where possible: multi-node annotation uses every node
            **({"scheduling_strategy": "SPREAD"} if actors > 1 else {}),
        )
        art.labels_dir.mkdir(parents=True, exist_ok=True)
        _drain(ds, remaining)  # the actors write the label files; the driver only follows progress
    del ray  # imported for its side effect of being initialised above
    return _finish(cfg, art, total, done_ids, start, unreadable)


def _finish(cfg: SKRConfig, art: Artifacts, total: int, done_ids: Any, start: float,
            unreadable: list[str] = ()) -> dict[str, Any]:
    """Summary of what is on disk, marked done when every document has its labels."""
    a = cfg.annotate
    summary = summarize_labels(art.labels_dir, total, a.questions_per_doc * len(a.label_kinds), a.drop_duplicates)
    from skr_ray.config import annotator_model
    from skr_ray.models.backbone import model_id

    summary["annotator_model_id"] = model_id(annotator_model(cfg))
    summary["learner_model_id"] = model_id(cfg.model)
    if unreadable:  # input files left out (e.g. corrupt PDFs), each with its path
        summary["unreadable_files"] = list(unreadable)
    generated, redone = journal_totals(art.annotate_journal)
    summary.update(
        {
            "resumed_from_documents": len(done_ids),
            "labelled_this_run": summary["documents_labelled"] - len(done_ids),
            "documents_generated": generated,
            # generated more than once: lost to a killed run, or retried after a lost actor
            "documents_redone": redone,
            "seconds": round(time.perf_counter() - start, 1),
        }
    )
    write_json(art.annotate_summary, summary)
    if a.engine == "vllm" and summary["label_rows"] < summary["expected_label_rows"]:
        raise StageError(f"annotation wrote {summary['label_rows']} of {summary['expected_label_rows']} label rows; "
                         "re-run to resume")
    if summary["documents_labelled"] < total:
        raise StageError(
            f"annotation wrote {summary['documents_labelled']} of {total} documents; re-run to resume"
        )
    Artifacts.mark_done(art.annotate_dir, {"documents": total})
    log.info("annotation done: %s", json.dumps(summary))
    return summary
