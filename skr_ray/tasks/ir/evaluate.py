"""`skr evaluate task=ir`: every system on the labelled BEIR test set (texts or images), in one report.

Evaluation labels (queries, qrels) are read here and nowhere else; the head-only baseline learns
from the self-labels of the annotate stage, never from them.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np

from skr_ray.artifacts import Artifacts, skip_if_done
from skr_ray.config import SKRConfig
from skr_ray.corpus import read_eval_set
from skr_ray.evaluate.encode import EncodeJob, EncoderSpec, encode_many, encode_texts
from skr_ray.evaluate.metrics import first_relevant_ranks, recall_curve, retrieval_metrics
from skr_ray.evaluate.report import write_qrels, write_report, write_run

log = logging.getLogger(__name__)


def _eval_job(spec: EncoderSpec, corpus: dict[str, str], queries: dict[str, str], cfg: SKRConfig) -> EncodeJob:
    """Candidates and queries together, in one job."""
    texts = {f"d:{k}": v for k, v in corpus.items()} | {f"q:{k}": v for k, v in queries.items()}
    images = {f"d:{k}" for k in corpus} if cfg.data.modality == "image" else set()
    return EncodeJob(texts, spec, "eval", images)


def _embed_pair(
    spec: EncoderSpec, corpus: dict[str, str], queries: dict[str, str], cfg: SKRConfig, art: Artifacts
) -> tuple[np.ndarray, list[str], np.ndarray, list[str], float]:
    job = _eval_job(spec, corpus, queries, cfg)
    emb, ids, seconds = encode_texts(job.texts, spec, cfg, art.embedding_cache, job.label, job.images)
    d_rows = [i for i, x in enumerate(ids) if x.startswith("d:")]
    q_rows = [i for i, x in enumerate(ids) if x.startswith("q:")]
    return (emb[q_rows], [ids[i][2:] for i in q_rows], emb[d_rows], [ids[i][2:] for i in d_rows], seconds)


@skip_if_done("evaluate")
def run_ir_evaluation(cfg: SKRConfig) -> dict[str, Any]:
    from skr_ray.ray_utils import ensure_ray

    art = Artifacts(cfg.output_dir)
    if cfg.data.modality == "image":
        from skr_ray.evaluate.images import read_image_eval_set

        evalset = read_image_eval_set(cfg.data.eval, cfg.data.max_queries)
    else:
        evalset = read_eval_set(cfg.data.eval, cfg.data.max_chars, cfg.data.max_queries)
    systems = list(cfg.evaluate.systems)
    needs_ckpt = "skr" in systems or "skr_bm25" in systems
    if "skr_bm25" in systems and cfg.data.modality == "image":
        from skr_ray.config import ConfigError

        raise ConfigError("evaluate.systems: skr_bm25 fuses with BM25 over passages; it is for text documents")
    if needs_ckpt and not (art.checkpoint_dir / "adapter").is_dir():
        raise FileNotFoundError(f"no SKR checkpoint in {art.checkpoint_dir}; run `skr train` first")
    if any(s in systems for s in ("base", "e5v", "head_only", "skr", "skr_bm25")):
        ensure_ray(cfg.ray)
    corpus, queries, qrels = evalset.corpus, evalset.queries, evalset.qrels
    n_texts = len(corpus) + len(queries)
    log.info("evaluating %s on %d queries x %d candidates", systems, len(queries), len(corpus))

    summary = json.loads(art.annotate_summary.read_text()) if art.annotate_summary.is_file() else {}
    context = {
        "eval": cfg.data.eval,
        "queries": len(queries),
        "candidates": len(corpus),
        "model": cfg.model.name_or_path,
        "train_pairs": summary.get("usable", "n/a"),
        "label_status": summary.get("status_counts", {}),
    }
    if cfg.data.modality == "text" and art.labels_dir.is_dir():
        context["overlap"] = _overlap(art, corpus)
    results: dict[str, dict[str, float]] = {}
    curves: dict[str, np.ndarray] = {}
    reciprocal: dict[str, dict[str, float]] = {}  # system -> query id -> 1/rank, for the bootstrap intervals
    max_k = max(max(cfg.evaluate.ks), 20)
    write_qrels(art.qrels_file, qrels, list(queries))

    def record(name: str, scores: np.ndarray, q_ids: list[str], d_ids: list[str], seconds: float) -> None:
        ranks = first_relevant_ranks(scores, d_ids, q_ids, qrels)
        row = retrieval_metrics(ranks, cfg.evaluate.ks)
        row["seconds_per_100"] = 100.0 * seconds / n_texts if seconds else None
        results[name] = row
        curves[name] = recall_curve(ranks, min(max_k, len(d_ids)))
        reciprocal[name] = dict(zip(q_ids, (1.0 / ranks).tolist()))
        write_run(art.run_file(name), scores, q_ids, d_ids, qrels, name)
        log.info("%s: %s", name, json.dumps({k: round(v, 4) for k, v in row.items() if v is not None}))
        write_report(art.evaluate_dir, results, curves, context, reciprocal)  # partial results survive a kill

    frozen: dict[EncoderSpec, tuple] = {}  # base-model embeddings, shared by base/e5v/head_only

    def frozen_pair(spec: EncoderSpec) -> tuple:
        if spec not in frozen:
            frozen[spec] = _embed_pair(spec, corpus, queries, cfg, art)
        return frozen[spec]

    def reference_docs(d_ids: list[str]) -> list[str]:
        if cfg.data.modality == "image":  # what a user would try on charts: their OCR text
            from skr_ray.evaluate.images import ocr_texts

            ocr = ocr_texts(corpus, art.embedding_cache / "ocr.json")
            return [ocr[d] for d in d_ids]
        return [corpus[d] for d in d_ids]

    skr: dict[str, Any] = {}  # SKR embeddings, shared by skr and skr_bm25

    def skr_pair() -> tuple:
        if not skr:
            skr["spec"] = _skr_spec(art)
            skr["pair"] = _embed_pair(skr["spec"], corpus, queries, cfg, art)
        return skr["pair"]

    prepared = _encode_ahead(cfg, art, systems, corpus, queries)

    for name in systems:
        if name in ("bm25", "minilm"):
            from skr_ray.evaluate import baselines

            scorer = baselines.bm25_scores if name == "bm25" else baselines.minilm_scores
            q_ids, d_ids = list(queries), list(corpus)
            t0 = time.perf_counter()
            scores = scorer([queries[q] for q in q_ids], reference_docs(d_ids))
            record(name, scores, q_ids, d_ids, time.perf_counter() - t0)
        elif name in ("base", "e5v"):
            q, q_ids, d, d_ids, secs = frozen_pair(_frozen_spec("plain" if name == "base" else "e5v"))
            record(name, q @ d.T, q_ids, d_ids, secs)
        elif name == "head_only":
            from skr_ray.tasks.ir.probe import apply_head

            q, q_ids, d, d_ids, secs = frozen_pair(_frozen_spec(cfg.train.embed_prompt))
            head = _train_head_only(cfg, art, prepared.get("selflabels"))
            record(name, apply_head(head, q) @ apply_head(head, d).T, q_ids, d_ids, secs)
        elif name == "skr":
            q, q_ids, d, d_ids, secs = skr_pair()
            record(name, q @ d.T, q_ids, d_ids, secs)
        elif name == "skr_bm25":
            from skr_ray.evaluate.baselines import bm25_scores
            from skr_ray.tasks.ir.fusion import describe, fused_scores

            q, q_ids, d, d_ids, secs = skr_pair()
            dense = q @ d.T
            choice = _fusion_choice(cfg, art, skr["spec"], prepared)
            context["skr_bm25"] = {k: v for k, v in choice.items() if k != "validation_curve"}
            context["skr_bm25"]["description"] = describe(choice)
            t0 = time.perf_counter()
            bm25 = bm25_scores([queries[i] for i in q_ids], reference_docs(d_ids))
            fused = fused_scores(dense, bm25, choice)
            record(name, fused, q_ids, d_ids, secs + time.perf_counter() - t0)
            _write_fusion_curve(art, dense, bm25, q_ids, d_ids, qrels, choice)

    write_report(art.evaluate_dir, results, curves, context, reciprocal)
    Artifacts.write_config(art.evaluate_dir, cfg)
    Artifacts.mark_done(art.evaluate_dir, {"systems": systems})
    return results


def _skr_spec(art: Artifacts) -> EncoderSpec:
    head_info = json.loads((art.checkpoint_dir / "head.json").read_text())
    return EncoderSpec("skr", checkpoint=str(art.checkpoint_dir), prompt=head_info.get("prompt", "plain"),
                       pooling=head_info.get("pooling", "last_token"))


def _encode_ahead(cfg: SKRConfig, art: Artifacts, systems: list[str], corpus: dict[str, str],
                  queries: dict[str, str]) -> dict[str, Any]:
    """Everything the systems will encode, in one Ray Data pass per set of weights (the base model's, the SKR
    checkpoint's) rather than one per system and input set: each pass starts an actor pool and loads a model,
    which on a small evaluation costs more than the encoding. The systems then read their embeddings from the
    cache these passes fill. Returns the self-label and fusion jobs it built ("selflabels", "fusion"; a
    key is present when it was prepared), so the systems do not read the labels again."""
    jobs: list[EncodeJob] = []
    prepared: dict[str, Any] = {}
    if "base" in systems:
        jobs.append(_eval_job(_frozen_spec("plain"), corpus, queries, cfg))
    if "e5v" in systems:
        jobs.append(_eval_job(_frozen_spec("e5v"), corpus, queries, cfg))
    if "head_only" in systems:
        jobs.append(_eval_job(_frozen_spec(cfg.train.embed_prompt), corpus, queries, cfg))
        if art.is_done(art.annotate_dir):
            prepared["selflabels"] = _selflabel_job(cfg, art)
            jobs.append(prepared["selflabels"][0])
    if "skr" in systems or "skr_bm25" in systems:
        skr_spec = _skr_spec(art)
        jobs.append(_eval_job(skr_spec, corpus, queries, cfg))
        if ("skr_bm25" in systems and cfg.evaluate.fusion == "selfval"
                and not (art.evaluate_dir / "fusion.json").is_file()):
            prepared["fusion"] = _fusion_job(cfg, art, skr_spec)
            if prepared["fusion"] is not None:
                jobs.append(prepared["fusion"][0])
    unique = {(job.spec, job.label): job for job in jobs}
    if unique:
        encode_many(list(unique.values()), cfg, art.embedding_cache)
    return prepared


def _selflabel_job(cfg: SKRConfig, art: Artifacts) -> tuple[EncodeJob, int]:
    """head_only's training inputs: the self-labelled training split's questions and passages, encoded as
    SKR reads them (same input format, so the comparison isolates LoRA vs frozen backbone)."""
    from skr_ray.tasks.ir.pairs import load_pairs, split_pairs

    train_pairs, _ = split_pairs(load_pairs(art.labels_dir, cfg.annotate.drop_duplicates), cfg.train.val_fraction,
                                 cfg.train.seed)
    texts = {f"q{i}": p.query for i, p in enumerate(train_pairs)}
    texts |= {f"p{i}": p.passage for i, p in enumerate(train_pairs)}
    images = {f"p{i}" for i in range(len(train_pairs))} if cfg.data.modality == "image" else set()
    return EncodeJob(texts, _frozen_spec(cfg.train.embed_prompt), "selflabels", images), len(train_pairs)


def _fusion_job(cfg: SKRConfig, art: Artifacts, spec: EncoderSpec) -> tuple[EncodeJob, tuple] | None:
    """skr_bm25's validation inputs (self-labelled validation questions and passages), or None."""
    from skr_ray.tasks.ir.fusion import validation_texts

    val = validation_texts(cfg, art)
    if val is None:
        return None
    val_queries, val_docs, _ = val
    texts = {f"q{i}": t for i, t in enumerate(val_queries)} | {f"d{i}": t for i, t in enumerate(val_docs)}
    return EncodeJob(texts, spec, "fusion"), val


def _frozen_spec(prompt: str) -> EncoderSpec:
    """The untouched base model under an input format (plain = 'base' system, e5v = 'e5v' system)."""
    return EncoderSpec("base") if prompt == "plain" else EncoderSpec("e5v", prompt=prompt)


def _train_head_only(cfg: SKRConfig, art: Artifacts, selflabels: tuple[EncodeJob, int] | None = None) -> Any:
    """Projection head on frozen base states of the self-labelled *training* split."""
    from skr_ray.tasks.ir.probe import train_projection_head

    if not art.is_done(art.annotate_dir):
        raise FileNotFoundError(f"head_only needs self-labels; none finished in {art.annotate_dir}")
    job, n = selflabels or _selflabel_job(cfg, art)
    emb, ids, _ = encode_texts(job.texts, job.spec, cfg, art.embedding_cache, job.label, job.images)
    row = {x: i for i, x in enumerate(ids)}
    q = emb[[row[f"q{i}"] for i in range(n)]]
    p = emb[[row[f"p{i}"] for i in range(n)]]
    return train_projection_head(
        q, p, cfg.evaluate.head_only_epochs, cfg.train.batch_size, cfg.train.temperature, seed=cfg.seed
    )


def _fusion_choice(cfg: SKRConfig, art: Artifacts, spec: EncoderSpec,
                   prepared: dict[str, Any] | None = None) -> dict[str, Any]:
    """skr_bm25's rule (``evaluate.fusion``): RRF, or the rule that ranks best on the self-labelled validation split;
    saved as fusion.json, so a resumed evaluation fuses the same way."""
    from skr_ray.artifacts import write_json
    from skr_ray.evaluate.baselines import bm25_scores
    from skr_ray.tasks.ir.fusion import choose_rule, describe

    path = art.evaluate_dir / "fusion.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("rule") == cfg.evaluate.fusion and "method" in saved:
            return saved
    fusion = None
    if cfg.evaluate.fusion == "selfval":
        fusion = prepared["fusion"] if prepared and "fusion" in prepared else _fusion_job(cfg, art, spec)
        if fusion is None:
            log.warning("skr_bm25: no self-labelled validation questions to choose on; reciprocal-rank fusion")
    if fusion is None:
        choice = choose_rule("rrf")
    else:
        job, (val_queries, val_docs, gold) = fusion
        emb, ids, _ = encode_texts(job.texts, spec, cfg, art.embedding_cache, job.label)
        row = {x: i for i, x in enumerate(ids)}
        q = emb[[row[f"q{i}"] for i in range(len(val_queries))]]
        d = emb[[row[f"d{i}"] for i in range(len(val_docs))]]
        choice = choose_rule("selfval", q @ d.T, bm25_scores(val_queries, val_docs), np.asarray(gold))
        choice.update({"validation_questions": len(val_queries), "validation_passages": len(val_docs)})
    choice["rule"] = cfg.evaluate.fusion
    write_json(path, choice)
    log.info("skr_bm25: %s (%s)", describe(choice), choice["chosen_by"])
    return choice


def _write_fusion_curve(art: Artifacts, dense: np.ndarray, bm25: np.ndarray, q_ids: list[str], d_ids: list[str],
                        qrels: dict[str, set[str]], choice: dict[str, Any]) -> None:
    """fusion_curve.json/.png: the evaluation set's MRR at every fusion weight (and RRF's), beside the self-labelled
    validation curve when the rule was chosen there. The evaluation labels draw the curve after the rule was
    fixed; they choose nothing. It shows how much the weight matters on this set."""
    from skr_ray.artifacts import write_json
    from skr_ray.evaluate.report import plot_fusion_curve
    from skr_ray.tasks.ir.fusion import fusion_curve

    def mrr(scores: np.ndarray) -> float:
        return float(np.mean(1.0 / first_relevant_ranks(scores, d_ids, q_ids, qrels)))

    curve = fusion_curve(dense, bm25, mrr)
    write_json(art.evaluate_dir / "fusion_curve.json", {"evaluation": curve, "chosen": choice})
    plot_fusion_curve(art.evaluate_dir / "fusion_curve.png", curve, choice)


def _overlap(art: Artifacts, corpus: dict[str, str]) -> int:
    """How many evaluation candidates the model also saw as unlabeled input (same text): the demo and a dev split
    over the unlabeled corpus do; their self-labels never carry an evaluation label, but the report says so."""
    from skr_ray.tasks.ir.pairs import label_corpus

    seen = {" ".join(t.split()) for t in label_corpus(art.labels_dir).values()}
    return sum(" ".join(t.split()) in seen for t in corpus.values())
