"""AD building blocks: yes/no parsing and probabilities, pair building, head, loss, metrics, eval input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from skr_ray.corpus import CorpusError
from skr_ray.models.heads import ClassifierHead
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


def test_source_labels_follow_the_question_writer(tmp_path):
    from dataclasses import asdict

    import pyarrow.parquet as pq

    from skr_ray.config import ConfigError, from_dict
    from skr_ray.tasks.ad.annotate import read_judgements, summarize, write_source_labels

    corpus = {f"d{i}": f"passage {i} about topic {i % 3}" for i in range(6)}
    pairs = build_pairs([("d0", "what about topic 0?"), ("d4", "what about topic 1?")], corpus, 2, 1, seed=0)
    path = write_source_labels([asdict(p) for p in pairs], tmp_path)
    assert path.name.endswith(".parquet") and not list(tmp_path.glob("*.tmp"))
    rows = read_judgements(tmp_path)
    assert {r["pair_id"]: r["answer"] for r in rows} == {p.pair_id: int(p.kind == "own") for p in pairs}
    assert pq.read_table(path).num_rows == 8
    s = summarize(rows, len(pairs))
    assert s["class_balance"] == {"yes": 2, "no": 6, "yes_fraction": 0.25}
    assert s["answers_by_pair_kind"]["own"] == {"yes": 2, "no": 0}
    with pytest.raises(ValueError, match="kind 'test'"):
        write_source_labels([asdict(pairs[0]) | {"kind": "test"}], tmp_path)
    with pytest.raises(ConfigError, match="label_source"):
        from_dict({"task": "ad", "ad": {"label_source": "human"}})


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


def test_head_input_norm_standardizes_states_and_round_trips():
    from skr_ray.models.heads import make_classifier_head

    torch.manual_seed(0)
    common = torch.full((32,), 40.0)  # a large shared component, small per-input variation
    states = common + 0.1 * torch.randn(64, 32)
    head = make_classifier_head(32, {"hidden": 64, "input_norm": "batch"})
    head.train()
    head(states)  # updates the running statistics
    assert head.norm.running_mean.mean().item() == pytest.approx(4.0, abs=0.5)  # momentum 0.1 of 40
    head(states[:1])  # a batch of one uses the running statistics instead of failing
    loaded = make_classifier_head(32, {"hidden": 64, "input_norm": "batch"})
    loaded.load_state_dict(head.state_dict())
    head.eval()
    loaded.eval()
    torch.testing.assert_close(loaded(states), head(states))
    old = make_classifier_head(32, {"hidden": 64})  # checkpoints from before input_norm: no norm, same keys as then
    assert old.norm is None and all(k.startswith("net.") for k in old.state_dict())
    with pytest.raises(ValueError, match="input_norm"):
        make_classifier_head(32, {"input_norm": "layer"})


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


def test_probe_fit_keeps_the_lowest_validation_loss_epoch():
    """The probe that starts SKR's head: trained on states, the epoch with the lowest val loss returned."""
    from skr_ray.config import load_config
    from skr_ray.tasks.ad.probe import fit_head

    cfg = load_config(None, ["task=ad", "ad.head_hidden=32", "train.batch_size=8"])
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=gen)
    x = torch.randn(120, 16, generator=gen)
    y = ((x @ w + 3 * torch.randn(120, generator=gen)) > 1.0).float()  # weak signal: overfits after ~15 epochs
    x_tr, y_tr, x_va, y_va = x[:80], y[:80], x[80:], y[80:]
    head, threshold, history = fit_head(cfg, x_tr, y_tr, x_va, y_va, pos_weight=2.0, epochs=40, keep_best=True)
    assert [h["epoch"] for h in history] == list(range(40))
    assert not head.training and 0.0 <= threshold <= 1.0
    with torch.no_grad():
        kept = float(bce_loss(head(x_va), y_va, 2.0))
    best = min(h["val_loss"] for h in history)
    assert best < history[-1]["val_loss"] - 0.05  # the kept epoch is not the last one
    assert kept == pytest.approx(best, rel=1e-5)
    last, _, _ = fit_head(cfg, x_tr, y_tr, x_va, y_va, pos_weight=2.0, epochs=40)
    with torch.no_grad():
        assert float(bce_loss(last(x_va), y_va, 2.0)) == pytest.approx(history[-1]["val_loss"], rel=1e-5)


def test_probe_and_keep_options_are_validated():
    from skr_ray.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="ad.head_init"):
        load_config(None, ["task=ad", "ad.head_init=linear"])
    with pytest.raises(ConfigError, match="train.keep"):
        load_config(None, ["task=ad", "train.keep=best"])


def test_classification_metrics_on_a_hand_computed_case():
    # ranked by score: + - - + -. AUROC: the + at 0.9 beats 3 negatives, the + at 0.6 beats 1 -> 4/6.
    # AP: precision 1 at recall 0.5, precision 2/4 at recall 1 -> 0.5 * 1 + 0.5 * 0.5 = 0.75.
    y = np.array([1, 0, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.1])
    m = classification_metrics(y, s, 0.5)
    assert m["auroc"] == pytest.approx(4 / 6) and m["auprc"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(3 / 5) and m["positive_rate"] == pytest.approx(2 / 5)


def test_ntp_row_scoring_is_fixed_in_advance_not_picked_on_test_labels():
    from skr_ray.tasks.ad.evaluate import _ntp_row

    labels = np.array([1, 0, 0, 0])
    scored = [{"answer": a, "p_yes": p, "status": "ok"} for a, p in zip([1, 0, 0, 0], [0.4, 0.9, 0.1, 0.2])]
    m, scores = _ntp_row(labels, scored)
    # the generated class happens to be perfect here, yet the row keeps the softmax score (AP 1/2)
    assert m["score_source"] == "softmax(yes,no)" and m["auprc"] == pytest.approx(0.5)
    assert m["auprc_generated_class"] == pytest.approx(1.0) and m["accuracy"] == pytest.approx(1.0)
    np.testing.assert_allclose(scores, [0.4, 0.9, 0.1, 0.2])
