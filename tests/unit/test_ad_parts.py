"""AD building blocks: yes/no parsing and probabilities, pair building, head, loss, metrics, eval input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from skr_ray.corpus import CorpusError
from skr_ray.tasks.ad.head import ClassifierHead
from skr_ray.tasks.ad.labels import parse_yes_no, yes_no_token_ids, yes_probability
from skr_ray.tasks.ad.loss import bce_loss
from skr_ray.tasks.ad.metrics import best_threshold, classification_metrics
from skr_ray.tasks.ad.pairs import build_pairs, read_eval_pairs


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Yes", (1, "ok")),
        ("yes.", (1, "ok")),
        ("YES, because the passage states the revenue.", (1, "ok")),
        ("**No**", (0, "ok")),
        ("no - the passage is about debt", (0, "ok")),
        ("  No.\n", (0, "ok")),
        ("The answer is yes.", (1, "ok")),
        ("Answer: no", (0, "ok")),
        ("", (None, "empty")),
        ("The passage discusses revenue.", (None, "unparseable")),
        ("yes or no", (None, "unparseable")),
        ("No, the question can be answered from the passage.", (None, "contradictory")),
        ("No, the question cannot be answered from the passage.", (0, "ok")),
        ("Yes, it can be answered: revenue was $5m.", (1, "ok")),
        ("Yes. The question cannot be answered.", (None, "contradictory")),
        ("...", (None, "unparseable")),
    ],
)
def test_parse_yes_no(raw, expected):
    assert parse_yes_no(raw) == expected


def test_yes_probability_uses_every_spelling(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    yes, no = yes_no_token_ids(tok)
    assert yes and no and not set(yes) & set(no)
    logits = torch.zeros(2, tok.vocab_size if hasattr(tok, "vocab_size") else len(tok))
    logits[0, yes[0]] = 2.0  # favours yes by 2 nats
    logits[1, no[0]] = 2.0
    p = yes_probability(logits, yes, no)
    assert p[0].item() == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-5)
    assert p[1].item() == pytest.approx(1 / (1 + np.exp(2.0)), rel=1e-5)


def test_build_pairs_own_hard_easy():
    corpus = {
        "d1": "revenue rose to 10 million in 2023",
        "d2": "revenue fell to 8 million in 2022",
        "d3": "the board approved a dividend",
        "d4": "office leases run until 2030",
        "d5": "staff numbers grew by 12 percent",
    }
    questions = [("d1", "what was revenue in 2023?"), ("d3", "was a dividend approved?")]
    pairs = build_pairs(questions, corpus, hard=1, easy=2, seed=0)
    assert len(pairs) == 2 * (1 + 1 + 2)
    first = [p for p in pairs if p.query_id.startswith("d1#")]
    assert [p.kind for p in first] == ["own", "hard", "easy", "easy"]
    assert first[0].doc_id == "d1" and first[0].passage == corpus["d1"]
    assert first[1].doc_id == "d2"  # BM25 neighbour: shares 'revenue', 'in'
    assert len({p.doc_id for p in first}) == 4  # no passage twice per question
    assert all(p.label == -1 for p in pairs)  # no labels: the base model judges later
    assert len({p.pair_id for p in pairs}) == len(pairs)
    # deterministic
    assert [p.pair_id for p in build_pairs(questions, corpus, 1, 2, 0)] == [p.pair_id for p in pairs]


def test_build_pairs_rejects_unknown_source_doc():
    with pytest.raises(CorpusError, match="'dx'"):
        build_pairs([("dx", "what?")], {"d1": "text"}, hard=1, easy=0, seed=0)


def test_classifier_head_shapes_and_loss():
    head = ClassifierHead(32, hidden=1024)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 1024), (1024, 1024), (1024, 1)]
    logits = head(torch.randn(5, 32))
    assert logits.shape == (5,)
    labels = torch.tensor([1.0, 0, 0, 0, 1])
    plain = bce_loss(logits, labels)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert plain.item() == pytest.approx(ref.item(), rel=1e-6)
    # pos_weight scales only the positive terms
    weighted = bce_loss(torch.zeros(2), torch.tensor([1.0, 0.0]), pos_weight=3.0)
    assert weighted.item() == pytest.approx((3 * np.log(2) + np.log(2)) / 2, rel=1e-6)


def test_classification_metrics_and_threshold():
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.2, 0.1, 0.3, 0.8, 0.25, 0.05, 0.4, 0.35, 0.15])
    m = classification_metrics(y, s, 0.5)
    assert m["auroc"] == pytest.approx(1.0) and m["auprc"] == pytest.approx(1.0)
    assert m["accuracy"] == pytest.approx(1.0)
    t = best_threshold(y, s)
    assert 0.4 < t <= 0.8
    one_class = classification_metrics(np.zeros(3), np.array([0.1, 0.2, 0.3]), 0.5)
    assert one_class["auprc"] is None and one_class["accuracy"] == pytest.approx(1.0)


def _write_eval(tmp_path, rows, corpus=(("d1", "revenue rose"), ("d2", "debt fell"))):
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in corpus))
    (tmp_path / "answerability.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(tmp_path)


def test_read_eval_pairs_names_missing_doc_id(tmp_path):
    rows = [{"query_id": "q1", "query": "what rose?", "doc_id": "d1", "label": 1},
            {"query_id": "q1", "query": "what rose?", "doc_id": "d9", "label": 0}]
    with pytest.raises(CorpusError, match=r"answerability.jsonl:2: doc_id 'd9' is not in"):
        read_eval_pairs(_write_eval(tmp_path, rows), 4000)


def test_read_eval_pairs_bad_label_and_missing_field(tmp_path):
    with pytest.raises(CorpusError, match=r":1: field 'label' must be 0 or 1"):
        read_eval_pairs(_write_eval(tmp_path, [{"query_id": "q", "query": "x", "doc_id": "d1", "label": 2}]), 4000)
    with pytest.raises(CorpusError, match=r":1: missing field 'doc_id'"):
        read_eval_pairs(_write_eval(tmp_path, [{"query_id": "q", "query": "x", "label": 1}]), 4000)


def test_read_eval_pairs_stratified_subsample():
    full = read_eval_pairs("demo", 4000)
    assert len(full) == 100 and sum(p.label for p in full) == 20
    sub = read_eval_pairs("demo", 4000, max_pairs=50, seed=1)
    assert len(sub) == 50 and sum(p.label for p in sub) == 10  # 1:4 ratio kept
    assert {p.pair_id for p in sub} <= {p.pair_id for p in full}
