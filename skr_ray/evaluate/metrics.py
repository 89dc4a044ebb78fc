"""Retrieval metrics (pure numpy): rank of the first relevant candidate, MRR and Recall@k."""

from __future__ import annotations

import numpy as np


def first_relevant_ranks(
    scores: np.ndarray, doc_ids: list[str], query_ids: list[str], qrels: dict[str, set[str]]
) -> np.ndarray:
    """(Q, N) scores -> (Q,) 1-based rank of each query's best-ranked relevant document.

    Ties are broken pessimistically (a relevant document tied with others ranks after them), so a
    constant scorer cannot look good.
    """
    index = {d: i for i, d in enumerate(doc_ids)}
    ranks = np.empty(len(query_ids), dtype=np.int64)
    for row, qid in enumerate(query_ids):
        relevant = [index[d] for d in qrels[qid] if d in index]
        if not relevant:
            raise ValueError(f"query {qid!r} has no relevant document among the candidates")
        s = scores[row]
        best = s[relevant].max()
        ranks[row] = int((s >= best).sum() - (s[relevant] == best).sum() + 1)
    return ranks


def retrieval_metrics(ranks: np.ndarray, ks: list[int]) -> dict[str, float]:
    """MRR and Recall@k (share of queries whose first relevant document is in the top k)."""
    out = {"mrr": float(np.mean(1.0 / ranks))}
    for k in ks:
        out[f"recall@{k}"] = float(np.mean(ranks <= k))
    return out


def recall_curve(ranks: np.ndarray, max_k: int) -> np.ndarray:
    """(max_k,) Recall@1..max_k."""
    return np.array([np.mean(ranks <= k) for k in range(1, max_k + 1)])
