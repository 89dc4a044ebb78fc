"""Label-free data work on the self-labels with BM25 over the unlabeled corpus itself.

* Round-trip filtering (Promptagator, InPars): keep a self-written query only when BM25 ranks its own
  passage among the top ``k`` of the corpus; a query its passage does not stand out for is likely vague
  or off the passage.
* Hard negatives (GPL): the BM25 top candidates of a query that are not its passage, skipping passages
  nearly identical to the positive (TAT-QA holds the same table for several years or companies: such a
  "negative" would often answer the query too). Re-mined once with a first-round SKR model
  (``train.mining_checkpoint``), the candidates are that model's own top passages instead (GPL, ANCE).

No evaluation file is read here: the corpus is the one the labels were written from.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from skr_ray.tasks.ir.labels import words

log = logging.getLogger(__name__)


def bm25_ranking(queries: list[str], doc_ids: list[str], docs: list[str]) -> np.ndarray:
    """(Q, N) BM25 scores of every query against every corpus passage."""
    from skr_ray.evaluate.baselines import bm25_scores

    if not queries:
        return np.zeros((0, len(docs)), dtype=np.float32)
    return bm25_scores(queries, docs).astype(np.float32)


def own_ranks(scores: np.ndarray, doc_ids: list[str], sources: list[str]) -> np.ndarray:
    """1-based rank of each query's own passage (ties counted against it)."""
    index = {d: i for i, d in enumerate(doc_ids)}
    own = scores[np.arange(len(sources)), [index[s] for s in sources]]
    return 1 + (scores > own[:, None]).sum(axis=1) + ((scores == own[:, None]).sum(axis=1) - 1)


def near_duplicate(a: str, b: str, threshold: float) -> bool:
    """Word-set Jaccard similarity at or above ``threshold`` (1.0 only for the same words)."""
    sa, sb = set(words(a)), set(words(b))
    return bool(sa or sb) and len(sa & sb) / max(1, len(sa | sb)) >= threshold


@dataclass
class MiningReport:
    queries: int = 0
    round_trip_k: int = 0
    kept: int = 0
    kept_per_kind: dict[str, int] = field(default_factory=dict)
    dropped_per_kind: dict[str, int] = field(default_factory=dict)
    hard_negatives: int = 0
    negatives_found: int = 0
    skipped_near_duplicates: int = 0


def mine(
    pairs: list[dict],
    corpus: dict[str, str],
    round_trip_k: int = 0,
    hard_negatives: int = 0,
    duplicate_threshold: float = 0.8,
    depth: int = 30,
    negative_scores: np.ndarray | None = None,
) -> tuple[list[dict], MiningReport]:
    """Filter ``pairs`` ({doc_id, query, passage, kind}) by round trip and give each ``negatives``
    (passage texts) with their ``negative_ids``; returns the kept pairs and what happened.

    ``negative_scores`` ((Q, N) over the corpus' ids in sorted order, e.g. a first-round SKR model's
    similarities) ranks the negative candidates in place of BM25; the round trip stays BM25."""
    report = MiningReport(queries=len(pairs), round_trip_k=round_trip_k, hard_negatives=hard_negatives)
    if not pairs or (round_trip_k <= 0 and hard_negatives <= 0):
        report.kept = len(pairs)
        report.kept_per_kind = dict(Counter(p.get("kind", "question") for p in pairs))
        return [{**p, "negatives": [], "negative_ids": []} for p in pairs], report
    doc_ids = sorted(corpus)
    docs = [corpus[d] for d in doc_ids]
    scores = bm25_ranking([p["query"] for p in pairs], doc_ids, docs)
    if negative_scores is not None and negative_scores.shape != scores.shape:
        raise ValueError(f"negative_scores: shape {negative_scores.shape}, expected {scores.shape}")
    ranking = scores if negative_scores is None else negative_scores
    keep = np.ones(len(pairs), dtype=bool)
    if round_trip_k > 0:
        keep = own_ranks(scores, doc_ids, [p["doc_id"] for p in pairs]) <= round_trip_k
    out = []
    kept_kinds: Counter = Counter()
    dropped_kinds: Counter = Counter()
    for row, pair in enumerate(pairs):
        kind = pair.get("kind", "question")
        if not keep[row]:
            dropped_kinds[kind] += 1
            continue
        kept_kinds[kind] += 1
        negatives: list[str] = []
        negative_ids: list[str] = []
        if hard_negatives > 0:
            for j in np.argsort(-ranking[row], kind="stable")[:depth]:
                if len(negatives) >= hard_negatives:
                    break
                if doc_ids[j] == pair["doc_id"]:
                    continue
                if near_duplicate(docs[j], pair["passage"], duplicate_threshold):
                    report.skipped_near_duplicates += 1
                    continue
                negatives.append(docs[j])
                negative_ids.append(doc_ids[j])
            report.negatives_found += len(negatives)
        out.append({**pair, "negatives": negatives, "negative_ids": negative_ids})
    report.kept = len(out)
    report.kept_per_kind = dict(sorted(kept_kinds.items()))
    report.dropped_per_kind = dict(sorted(dropped_kinds.items()))
    log.info("label-free mining: %s", report)
    return out, report


def model_scores(cfg, checkpoint: str, queries: list[str], corpus: dict[str, str], cache_dir) -> np.ndarray:
    """(Q, N) cosine similarities of ``queries`` to the corpus' passages (ids in sorted order) under an SKR
    checkpoint, encoded on the Ray Data encoder pool (cached by content like evaluation's embeddings)."""
    import json
    from pathlib import Path

    from skr_ray.evaluate.encode import EncodeJob, EncoderSpec, encode_many

    info = json.loads((Path(checkpoint) / "head.json").read_text())
    spec = EncoderSpec("mining", checkpoint=str(checkpoint), prompt=info.get("prompt", "plain"),
                       pooling=info.get("pooling", "last_token"))
    doc_ids = sorted(corpus)
    (d, d_ids, _), (q, q_ids, _) = encode_many(  # one pass, one model load, for both
        [EncodeJob(corpus, spec, "corpus"), EncodeJob({f"q{i}": text for i, text in enumerate(queries)}, spec, "queries")],
        cfg, Path(cache_dir))
    d = d[np.argsort(np.array(d_ids))]  # encode_texts returns length order
    q = q[np.argsort(np.array([int(i[1:]) for i in q_ids]))]
    assert sorted(d_ids) == doc_ids
    return (q @ d.T).astype(np.float32)
