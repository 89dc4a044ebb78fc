import numpy as np
import pytest

from skr_ray.evaluate.metrics import first_relevant_ranks, recall_curve, retrieval_metrics


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
