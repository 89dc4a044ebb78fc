import numpy as np
import pytest

from skr_ray.evaluate.metrics import (
    bootstrap_auc,
    bootstrap_mean_interval,
    first_relevant_ranks,
    percentile_interval,
    ranking_order,
    recall_curve,
    retrieval_metrics,
    stratified_bootstrap_counts,
    strictly_decreasing,
    weighted_auroc,
    weighted_average_precision,
)


def test_ranks_with_several_relevant_documents():
    docs = ["a", "b", "c", "d"]
    scores = np.array([[0.9, 0.1, 0.5, 0.3],   # q1: relevant c (rank 2) and d (rank 3) -> 2
                       [0.1, 0.2, 0.3, 0.4]])  # q2: relevant a -> rank 4
    ranks = first_relevant_ranks(scores, docs, ["q1", "q2"], {"q1": {"c", "d"}, "q2": {"a"}})
    assert ranks.tolist() == [2, 4]
    m = retrieval_metrics(ranks, [1, 3, 5])
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert m["recall@1"] == 0.0 and m["recall@3"] == 0.5 and m["recall@5"] == 1.0
    assert recall_curve(ranks, 4).tolist() == [0.0, 0.5, 0.5, 1.0]


def test_ties_are_pessimistic():
    ranks = first_relevant_ranks(np.zeros((1, 5)), list("abcde"), ["q"], {"q": {"c"}})
    assert ranks.tolist() == [5]


def test_missing_relevant_document_is_an_error():
    with pytest.raises(ValueError, match="q9"):
        first_relevant_ranks(np.zeros((1, 2)), ["a", "b"], ["q9"], {"q9": {"zz"}})


def test_ranking_order_puts_the_first_relevant_document_where_first_relevant_ranks_does():
    rng = np.random.default_rng(0)
    docs = [f"d{i}" for i in range(30)]
    scores = rng.integers(0, 4, size=(50, 30)).astype(np.float32)  # many ties
    qrels = {f"q{r}": {f"d{i}" for i in rng.choice(30, size=rng.integers(1, 4), replace=False)} for r in range(50)}
    queries = list(qrels)
    ranks = first_relevant_ranks(scores, docs, queries, qrels)
    for row, qid in enumerate(queries):
        relevant = np.array([d in qrels[qid] for d in docs])
        order = ranking_order(scores[row], relevant)
        assert np.all(np.diff(scores[row][order]) <= 0)
        assert int(np.flatnonzero(relevant[order])[0]) + 1 == ranks[row]


def test_strictly_decreasing_keeps_the_order_and_moves_ties_by_a_few_float_steps():
    out = strictly_decreasing(np.array([3.0, 2.0, 2.0, 2.0, 2.0 - 1e-16, 0.0, 0.0]))
    assert np.all(np.diff(out) < 0)
    assert np.allclose(out, [3.0, 2.0, 2.0, 2.0, 2.0, 0.0, 0.0], atol=1e-14)
    assert out[0] == 3.0 and out[1] == 2.0 and out[5] == 0.0
    assert strictly_decreasing(np.array([1.0, 0.5])).tolist() == [1.0, 0.5]


def test_mean_interval_contains_the_estimate_and_is_reproducible():
    rr = 1.0 / np.random.default_rng(1).integers(1, 20, size=120)
    lo, hi = bootstrap_mean_interval(rr, 1000, seed=3)
    assert lo < rr.mean() < hi and hi - lo < 0.3
    assert (lo, hi) == bootstrap_mean_interval(rr, 1000, seed=3)


def test_paired_difference_intervals_for_identical_and_clearly_better_systems():
    rng = np.random.default_rng(2)
    weak = 1.0 / rng.integers(2, 30, size=80)
    assert bootstrap_mean_interval(weak - weak) == (0.0, 0.0)  # identical systems: width 0, contains 0
    strong = np.minimum(1.0, weak * 3)
    lo, hi = bootstrap_mean_interval(strong - weak)
    assert 0 < lo <= (strong - weak).mean() <= hi


def test_percentile_interval_drops_undefined_resamples():
    assert percentile_interval(np.array([np.nan, 1.0, 1.0])) == (1.0, 1.0)
    assert np.isnan(percentile_interval(np.array([np.nan]))[0])


def _ad_fixture(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.1).astype(int)
    return labels, np.round(rng.normal(size=n) + 1.5 * labels, 1)  # rounded: tied scores across classes


def test_weighted_auc_matches_scikit_learn_with_and_without_weights():
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels, scores = _ad_fixture()
    ones = np.ones((1, len(labels)))
    assert weighted_auroc(labels, scores, ones)[0] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert weighted_average_precision(labels, scores, ones)[0] == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12)
    counts = stratified_bootstrap_counts(labels, 8, seed=5)
    assert (counts[:, labels == 1].sum(axis=1) == labels.sum()).all()  # stratified: class sizes kept
    auroc, ap = weighted_auroc(labels, scores, counts), weighted_average_precision(labels, scores, counts)
    for b in range(len(counts)):
        assert auroc[b] == pytest.approx(roc_auc_score(labels, scores, sample_weight=counts[b]), abs=1e-12)
        assert ap[b] == pytest.approx(average_precision_score(labels, scores, sample_weight=counts[b]), abs=1e-12)


def test_auc_intervals_contain_the_estimate_and_pair_the_systems():
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels, scores = _ad_fixture(600)
    clearly_better = scores + 3.0 * labels
    stats = bootstrap_auc(labels, {"a": scores, "same": scores.copy(), "better": clearly_better}, 500, seed=1)
    lo, hi = percentile_interval(stats["a"]["auroc"])
    assert lo < roc_auc_score(labels, scores) < hi
    lo, hi = percentile_interval(stats["a"]["auprc"])
    assert lo < average_precision_score(labels, scores) < hi
    for metric in ("auroc", "auprc"):
        assert percentile_interval(stats["same"][metric] - stats["a"][metric]) == (0.0, 0.0)
        assert percentile_interval(stats["better"][metric] - stats["a"][metric])[0] > 0


def test_auc_bootstrap_is_fast_enough_for_every_report():
    """1000 resamples x 2000 pairs, two systems: well under a few seconds (vectorized over resamples)."""
    import time

    labels, scores = _ad_fixture(2000)
    start = time.perf_counter()
    stats = bootstrap_auc(labels, {"a": scores, "b": scores[::-1].copy()}, 1000, seed=0)
    assert time.perf_counter() - start < 10.0  # ~0.4 s measured; loose for shared CI machines
    assert stats["a"]["auprc"].shape == (1000,)
