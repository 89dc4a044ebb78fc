"""`skr_bm25`: SKR and BM25 scores, each normalized per query, combined convexly.

The weight and the normalization are chosen on the self-labelled validation split (each self-written
question of the held-out documents against those documents' passages): no human label picks them. The
system needs the corpus' BM25 index, so it lives on the search side (evaluation), not in an embedding.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

NORMALIZATIONS = ("zscore", "minmax")
WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 21))


def normalize(scores: np.ndarray, how: str) -> np.ndarray:
    """(Q, N) scores rescaled per query (row): z-score or min-max."""
    s = scores.astype(np.float64)
    if how == "zscore":
        return (s - s.mean(axis=1, keepdims=True)) / (s.std(axis=1, keepdims=True) + 1e-9)
    if how == "minmax":
        lo, hi = s.min(axis=1, keepdims=True), s.max(axis=1, keepdims=True)
        return (s - lo) / (hi - lo + 1e-9)
    raise ValueError(f"unknown normalization {how!r}; known: {NORMALIZATIONS}")


def fuse(dense: np.ndarray, bm25: np.ndarray, weight: float, how: str) -> np.ndarray:
    """weight * dense + (1 - weight) * bm25, both normalized per query."""
    return weight * normalize(dense, how) + (1.0 - weight) * normalize(bm25, how)


def _mrr(scores: np.ndarray, gold: np.ndarray) -> float:
    own = scores[np.arange(len(gold)), gold]
    ranks = 1 + (scores > own[:, None]).sum(axis=1)
    return float(np.mean(1.0 / ranks))


def choose_weight(dense: np.ndarray, bm25: np.ndarray, gold: np.ndarray) -> dict[str, Any]:
    """Best (normalization, weight) by MRR of ``gold`` (the column of each row's own passage); ties go to
    the larger dense weight. Returns the choice and the whole grid."""
    grid = {how: [_mrr(fuse(dense, bm25, w, how), gold) for w in WEIGHTS] for how in NORMALIZATIONS}
    best = max(((v, w, how) for how, vals in grid.items() for w, v in zip(WEIGHTS, vals)), key=lambda x: (x[0], x[1]))
    return {"weight": best[1], "normalization": best[2], "validation_mrr": best[0],
            "validation_mrr_dense": grid["zscore"][-1], "validation_mrr_bm25": grid["zscore"][0],
            "grid": {how: dict(zip(map(str, WEIGHTS), map(lambda x: round(x, 4), vals))) for how, vals in grid.items()}}


def validation_texts(cfg: Any, art: Any) -> tuple[list[str], list[str], list[int]] | None:
    """(queries, passages, gold column per query) of the self-labelled validation split: its questions
    (the form users search with; every kind when no question was kept) against its documents."""
    from skr_ray.tasks.ir.pairs import load_pairs, split_pairs

    _, val = split_pairs(load_pairs(art.labels_dir, cfg.annotate.drop_duplicates), cfg.train.val_fraction,
                         cfg.train.seed)
    questions = [p for p in val if p.kind == "question"]
    questions = questions if len(questions) >= 2 else val
    docs = sorted({p.doc_id: p.passage for p in val}.items())
    if len(questions) < 2 or len(docs) < 2:
        return None
    column = {d: i for i, (d, _) in enumerate(docs)}
    return [p.query for p in questions], [t for _, t in docs], [column[p.doc_id] for p in questions]
