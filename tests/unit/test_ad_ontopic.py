"""AD on-topic negatives: label-free checks of model rewrites, rule perturbations, and the pairs they join."""

from __future__ import annotations

import random

import pytest

from skr_ray.tasks.ad.ontopic import Pools, check_rewrite, perturb, rule_negatives

PASSAGE = ("The Rhine flows from the Swiss Alps to the North Sea. In 1815 the Congress of Vienna made it an "
           "international waterway, and by 1900 it carried 60 million tonnes of cargo a year.")
OTHER = {"x": "Warsaw grew quickly after 1945; the Vistula was bridged 12 times.",
         "y": "The Danube reaches the Black Sea in Romania after 2,850 kilometres."}


@pytest.mark.parametrize("rewrite,status", [
    ("", "empty"),
    ("In what year did the Congress of Vienna make the Rhine an international waterway?", "unchanged"),
    ("In what year did Congress make the Rhine a waterway?", "nothing_new"),
    ("The Congress of Berlin made the Rhine international", "not_a_question"),
    ("In what year did the Congress of Vienna make the Swiss Alps an international waterway?", "change_in_passage"),
    ("In what year did the Congress of Berlin make the Rhine an international waterway?", "ok"),
    ("Who painted the Mona Lisa in Florence?", "off_topic"),
])
def test_a_rewrite_is_kept_only_when_its_change_is_not_in_the_passage(rewrite, status):
    original = "In what year did the Congress of Vienna make the Rhine an international waterway?"
    assert check_rewrite(original, rewrite, PASSAGE) == status


def test_rule_perturbations_change_what_the_passage_does_not_contain():
    pools = Pools.of({"rhine": PASSAGE, **OTHER})
    rng = random.Random(0)
    q = "How many million tonnes of cargo did the Rhine carry by 1900?"
    text, status = perturb("number", q, PASSAGE, pools, rng)
    assert status == "ok" and text != q and ("1945" in text or "12" in text or "2,850" in text)
    text, status = perturb("name", "Where does the Rhine flow from?", PASSAGE, pools, rng)
    assert status == "ok" and "Rhine" not in text and any(n in text for n in ("Warsaw", "Vistula", "Danube",
                                                                             "Black Sea", "Romania"))
    assert perturb("negation", "Where does the Rhine flow from?", PASSAGE, pools, rng) == (
        "Where does not the Rhine flow from?", "ok")
    assert perturb("negation", "Why isn't it used?", PASSAGE, pools, rng)[1] == "no_auxiliary"
    assert perturb("number", "Where does the Rhine flow from?", PASSAGE, pools, rng) == ("", "no_number")
    text, status = perturb("entity", "Where does the Rhine flow from?", PASSAGE, pools, rng)
    assert status == "ok" and "Rhine" not in text
    found, statuses = rule_negatives([("rhine", q)], {"rhine": PASSAGE, **OTHER}, ["number", "negation"], seed=1)
    assert [k for _, k, _ in found] == ["rule_number", "rule_negation"]
    assert statuses == {"rule_number:ok": 1, "rule_negation:ok": 1}
    with pytest.raises(ValueError, match="unknown rule"):
        perturb("shuffle", q, PASSAGE, pools, rng)


def test_swap_puts_another_name_or_number_of_the_same_passage_in_the_question():
    pools = Pools.of({"rhine": PASSAGE, **OTHER})
    seen = set()
    for seed in range(20):
        text, status = perturb("swap", "What did the Congress of Vienna make the Rhine in 1815?", PASSAGE, pools,
                               random.Random(seed))
        assert status == "ok"
        seen.add(text)
    # every swap uses the passage's own vocabulary: a year for the year, a name of this passage for a name
    assert "What did the Congress of Vienna make the Rhine in 1900?" in seen
    assert any("Swiss Alps" in t or "North Sea" in t for t in seen)
    for text in seen:
        words_out = {w for w in text.rstrip("?").split()[1:] if w[0].isupper() or w[0].isdigit()}
        assert all(w in PASSAGE for w in words_out), text
        assert not any(n in text for n in ("Warsaw", "Vistula", "Danube", "1945"))
    assert perturb("swap", "Where does the Danube flow from?", PASSAGE, pools, random.Random(0)) == ("", "no_name")
    assert perturb("swap", "When was it built?", PASSAGE, pools, random.Random(0)) == ("", "no_name")


def test_on_topic_pairs_join_the_own_passage_with_label_zero(tmp_path):
    import pyarrow.parquet as pq

    from skr_ray.tasks.ad.annotate import write_source_labels
    from skr_ray.tasks.ad.pairs import build_pairs

    corpus = {"rhine": PASSAGE, **OTHER}
    questions = [("rhine", "Where does the Rhine flow from?"), ("x", "When did Warsaw grow quickly?")]
    ontopic = [(0, "rewrite", "Where does the Danube flow from?"), (0, "rule_negation", "Where does not the Rhine flow from?"),
               (0, "rule_name", "Where does the Vistula flow from?"), (1, "rule_number", "When did Warsaw grow in 1815?")]
    pairs = build_pairs(questions, corpus, hard=1, easy=0, seed=0, ontopic=ontopic, ontopic_per_question=2)
    kinds = [(p.doc_id, p.kind) for p in pairs]
    assert kinds.count(("rhine", "own")) == 1 and kinds.count(("x", "own")) == 1
    on_topic = [p for p in pairs if p.kind not in ("own", "hard", "easy")]
    assert len(on_topic) == 3 and all(p.passage == corpus[p.doc_id] for p in on_topic)  # own passage, 2 + 1
    assert len({p.pair_id for p in pairs}) == len(pairs)
    path = write_source_labels([dict(p.__dict__) for p in pairs], tmp_path)
    labels = {(r["query"], r["doc_id"]): r["answer"] for r in pq.read_table(path).to_pylist()}
    assert labels[("Where does the Rhine flow from?", "rhine")] == 1
    assert all(labels[(p.query, p.doc_id)] == 0 for p in on_topic)


def test_the_annotator_rewrites_and_every_rewrite_gets_a_status(tiny_model_dir, tmp_path, ray_local):
    from skr_ray.config import load_config
    from skr_ray.tasks.ad.ontopic import model_rewrites

    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", f"output_dir={tmp_path}", "task=ad",
                             "annotate.batch_size=4", "ad.ontopic_sources=[rewrite]"])
    questions = [("rhine", "Where does the Rhine flow from?"), ("x", "When did Warsaw grow quickly?"),
                 ("y", "Where does the Danube reach the sea?")]
    cache = tmp_path / "rewrites.parquet"
    kept, statuses = model_rewrites(cfg, questions, {"rhine": PASSAGE, **OTHER}, cache)
    assert sum(statuses.values()) == 3 and all(k.startswith("rewrite:") for k in statuses)
    assert cache.is_file() and model_rewrites(cfg, questions, {}, cache) == (kept, statuses)  # read back
