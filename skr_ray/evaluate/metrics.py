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


def ranking_order(scores: np.ndarray, relevant: np.ndarray | None = None) -> np.ndarray:
    """(N,) scores of one query -> candidate indices, best first: the order the report ranks them in.

    Higher score first; among tied scores non-relevant candidates come before relevant ones (the pessimistic
    tie break of ``first_relevant_ranks``), then candidate order, so the order is fully determined. Run files
    are written in this order, which is why a tool reading them ranks each query's first relevant candidate
    where ``first_relevant_ranks`` does.
    """
    s = np.asarray(scores, dtype=np.float64)
    rel = np.zeros(len(s), dtype=bool) if relevant is None else np.asarray(relevant, dtype=bool)
    return np.lexsort((np.arange(len(s)), rel, -s))


def strictly_decreasing(ordered: np.ndarray) -> np.ndarray:
    """Scores already in ranking order -> float64 scores lowered by as few float steps as it takes to make them
    strictly decreasing.

    trec_eval and ranx re-sort a run file by score and break ties their own way (by doc id, or arbitrarily),
    so a tie written as a tie could be re-ranked differently from the report. Each tied score moves down by
    a few units in the last place (at most one per tied candidate), so the written scores stay the system's.
    """
    import math

    out = np.asarray(ordered, dtype=np.float64).copy()
    if len(out) < 2 or bool(np.all(np.diff(out) < 0)):
        return out
    values = out.tolist()
    for i in range(1, len(values)):
        if values[i] >= values[i - 1]:
            values[i] = math.nextafter(values[i - 1], -math.inf)
    return np.asarray(values, dtype=np.float64)


# Bootstrap intervals ------------------------------------------------------------------------------------------
# With 40-200 queries or 50-100 positive pairs, differences of a few points between systems are within noise;
# the reports carry percentile-bootstrap intervals so a reader can tell. Paired differences resample the same
# queries (or pairs) for both systems, which is what makes them much tighter than two separate intervals.


def bootstrap_indices(n: int, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_resamples, n) row indices drawn with replacement, reproducible from ``seed``."""
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def percentile_interval(stats: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap statistics (NaNs, e.g. resamples where a metric is undefined, dropped)."""
    stats = np.asarray(stats, dtype=np.float64)
    stats = stats[~np.isnan(stats)]
    if not len(stats):
        return (float("nan"), float("nan"))
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(stats, [tail, 100.0 - tail])
    return (float(lo), float(hi))


def bootstrap_mean_interval(
    values: np.ndarray, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-query ``values``, resampling queries.

    MRR is the mean of per-query reciprocal ranks; pass the per-query differences of two systems (same query
    order) for the paired interval of their MRR difference: resampling the rows of the difference uses the
    same resampled queries for both systems.
    """
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return (float("nan"), float("nan"))
    idx = bootstrap_indices(len(values), n_resamples, seed)
    return percentile_interval(values[idx].mean(axis=1), level)


def stratified_bootstrap_counts(
    labels: np.ndarray, n_resamples: int = 1000, seed: int | np.random.Generator = 0
) -> np.ndarray:
    """(n_resamples, M) how often each of M labelled pairs is drawn, resampling positives and negatives apart.

    Stratifying keeps the class ratio of every resample equal to the evaluation set's, so AUROC and AUPRC are
    defined in every resample and AUPRC's chance level does not move between resamples. Counts (rather than
    index lists) let one resample be scored for every system as sample weights. ``seed`` may be a Generator,
    to draw a long series of resamples a block at a time.
    """
    y = np.asarray(labels).astype(bool)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    m = len(y)
    counts = np.zeros((n_resamples, m), dtype=np.int64)
    rows = np.arange(n_resamples)[:, None] * m
    for members in (np.flatnonzero(y), np.flatnonzero(~y)):
        if len(members):
            drawn = members[rng.integers(0, len(members), size=(n_resamples, len(members)))]
            counts += np.bincount((rows + drawn).ravel(), minlength=n_resamples * m).reshape(n_resamples, m)
    return counts


def weighted_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(M,) labels and scores, (B, M) sample weights -> (B,) AUROC, ties counting one half.

    With integer weights (bootstrap counts) this is the AUROC of the resample, and with all-one weights it is
    scikit-learn's ``roc_auc_score``; all B resamples are computed at once (cumulative weights of the
    negatives below each positive), which is what keeps 1000 resamples fast. NaN where a class has no weight.
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    neg_order = np.argsort(s[~y], kind="stable")
    neg_scores = s[~y][neg_order]
    w_neg = w[:, ~y][:, neg_order]
    cum = np.concatenate([np.zeros((len(w), 1)), np.cumsum(w_neg, axis=1)], axis=1)
    pos_scores = s[y]
    below = cum[:, np.searchsorted(neg_scores, pos_scores, side="left")]
    tied = cum[:, np.searchsorted(neg_scores, pos_scores, side="right")] - below
    w_pos = w[:, y]
    total = w_pos.sum(axis=1) * cum[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (w_pos * (below + 0.5 * tied)).sum(axis=1) / np.where(total > 0, total, 1.0)
    return np.where(total > 0, np.clip(auc, 0.0, 1.0), np.nan)  # clip: rounding can pass 1 by an ulp


def weighted_average_precision(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(M,) labels and scores, (B, M) sample weights -> (B,) average precision (AUPRC), for all B at once.

    The same step-wise sum as scikit-learn's ``average_precision_score`` (tied scores form one threshold;
    precision at each threshold times the recall it adds), weighted; all-one weights give its value.
    NaN where the positives have no weight.
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(-s, kind="stable")
    ordered = s[order]
    ends = np.flatnonzero(np.append(ordered[1:] != ordered[:-1], True))  # last row of each threshold
    w = w[:, order]
    tp = np.cumsum(w * y[order], axis=1)[:, ends]
    seen = np.cumsum(w, axis=1)[:, ends]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seen > 0, tp / np.where(seen > 0, seen, 1.0), 0.0)
        recall = tp / tp[:, -1:]
    gained = np.diff(np.concatenate([np.zeros((len(w), 1)), recall], axis=1), axis=1)
    return np.clip((gained * precision).sum(axis=1), 0.0, 1.0)  # clip: rounding can pass 1 by an ulp; NaN stays


def bootstrap_auc(
    labels: np.ndarray, scores: dict[str, np.ndarray], n_resamples: int = 1000, seed: int = 0, chunk: int = 250
) -> dict[str, dict[str, np.ndarray]]:
    """system -> {"auroc": (n_resamples,), "auprc": (n_resamples,)} over stratified resamples of the pairs.

    Every system is scored on the same resamples (paired), so a difference of two systems' arrays is the
    bootstrap distribution of their difference. Resamples are drawn and scored ``chunk`` at a time to bound
    memory on large evaluation sets.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, list[np.ndarray]]] = {name: {"auroc": [], "auprc": []} for name in scores}
    for start in range(0, n_resamples, chunk):
        block = stratified_bootstrap_counts(labels, min(chunk, n_resamples - start), rng)
        for name, s in scores.items():
            out[name]["auroc"].append(weighted_auroc(labels, s, block))
            out[name]["auprc"].append(weighted_average_precision(labels, s, block))
    return {name: {k: np.concatenate(v) if v else np.empty(0) for k, v in m.items()} for name, m in out.items()}
