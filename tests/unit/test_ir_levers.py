"""IR training levers: label kinds, round-trip filter, mined hard negatives, masked InfoNCE, score fusion."""

import math

import numpy as np
import pytest
import torch

from skr_ray.config import ConfigError, TrainConfig
from skr_ray.tasks.ir.fusion import choose_rule, fused_scores, mrr_of
from skr_ray.tasks.ir.labels import QuestionFilter, kind_filter, parse_label
from skr_ray.tasks.ir.loss import info_nce, masked_info_nce
from skr_ray.tasks.ir.mining import mine, near_duplicate, own_ranks
from skr_ray.tasks.ir.prompts import EXAMPLE_KEYWORDS, build_kind_messages

CORPUS = {
    "rev19": "Revenue in 2019 was $5.2 million, up from $4.1 million in 2018, driven by software licences.",
    "rev18": "Revenue in 2018 was $4.1 million, up from $3.9 million in 2017, driven by software licences.",
    "tax": "The effective tax rate was 21 percent, reflecting the lower federal statutory rate.",
    "staff": "The company employed 310 people at year end, most of them in engineering and sales.",
    "lease": "Operating lease liabilities amounted to $2.3 million, with terms of three to seven years.",
}


def test_kinds_have_their_own_prompts_and_filters():
    base = QuestionFilter(echo_of=("What were cash and cash equivalents at 31 December 2018?",))
    assert build_kind_messages("Passage text", "keywords")[-1]["content"].startswith("Passage:\nPassage text")
    assert parse_label("effective tax rate federal", "x", kind_filter("keywords", base), "keywords") == (
        "effective tax rate federal", "ok")
    assert parse_label(EXAMPLE_KEYWORDS, "x", kind_filter("keywords", base), "keywords")[1] == "echoes_example"
    # a keyword query made of the passage's words is kept; a copied question is not
    source = "operating lease liabilities amounted to two million dollars in total"
    assert parse_label("operating lease liabilities amounted to two million", source,
                       kind_filter("keywords", base), "keywords")[1] == "ok"
    statement = kind_filter("statement", base)
    assert parse_label("The tax rate fell to 21 percent.", "x", statement, "statement") == (
        "The tax rate fell to 21 percent.", "ok")
    assert parse_label("Did the tax rate fall to 21 percent?", "x", statement, "statement")[1] == "not_a_statement"
    with pytest.raises(ConfigError):
        TrainConfig(label_kinds=["question", "poem"])


def _pair(doc, query, kind="question"):
    return {"doc_id": doc, "query": query, "passage": CORPUS[doc], "kind": kind}


def test_round_trip_keeps_queries_whose_passage_bm25_ranks_high():
    pairs = [_pair("tax", "effective tax rate federal statutory"),
             _pair("staff", "How many people did the company employ in engineering?"),
             _pair("lease", "revenue software licences 2019", "keywords")]  # points at another passage
    kept, report = mine(pairs, CORPUS, round_trip_k=1)
    assert [p["doc_id"] for p in kept] == ["tax", "staff"]
    assert report.kept == 2 and report.dropped_per_kind == {"keywords": 1}
    ranks = own_ranks(np.array([[3.0, 1.0, 3.0], [0.0, 2.0, 1.0]]), ["a", "b", "c"], ["a", "c"])
    assert ranks.tolist() == [2, 2]  # a tie counts against the own passage


def test_hard_negatives_skip_the_source_and_its_near_duplicates():
    assert near_duplicate(CORPUS["rev19"], CORPUS["rev18"], 0.6)
    assert not near_duplicate(CORPUS["rev19"], CORPUS["tax"], 0.6)
    pairs = [_pair("rev19", "What was revenue in 2019 driven by software licences?")]
    kept, report = mine(pairs, CORPUS, hard_negatives=2, duplicate_threshold=0.6)
    (pair,) = kept
    assert "rev19" not in pair["negative_ids"] and "rev18" not in pair["negative_ids"]
    assert len(pair["negatives"]) == 2 and pair["negatives"][0] == CORPUS[pair["negative_ids"][0]]
    assert report.skipped_near_duplicates == 1
    plain, _ = mine(pairs, CORPUS, hard_negatives=2, duplicate_threshold=1.0)
    assert plain[0]["negative_ids"][0] == "rev18"  # without the guard the near-copy is the top "negative"
    # re-mined with a first-round model: its ranking picks the negatives, the guard still applies
    ids = sorted(CORPUS)  # lease, rev18, rev19, staff, tax
    model = np.array([[0.9, 0.8, 1.0, 0.1, 0.5]], dtype=np.float32)
    remined, _ = mine(pairs, CORPUS, hard_negatives=2, duplicate_threshold=0.6, negative_scores=model)
    assert ids == ["lease", "rev18", "rev19", "staff", "tax"]
    assert remined[0]["negative_ids"] == ["lease", "tax"]
    with pytest.raises(ValueError, match="negative_scores"):
        mine(pairs, CORPUS, hard_negatives=1, negative_scores=model[:, :3])
    with pytest.raises(ConfigError, match="mining_checkpoint"):
        TrainConfig(mining_checkpoint="runs/x/train/checkpoint")


def test_masked_info_nce_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    t = 0.5
    # no extras, no shared documents: the plain symmetric InfoNCE
    torch.testing.assert_close(masked_info_nce(q, p, t, docs=torch.tensor([1, 2])), info_nce(q, p, t))
    # both queries come from one document: the other's passage is not a negative, so each row has one
    # candidate left and the loss is zero
    assert masked_info_nce(q, p, t, docs=torch.tensor([7, 7])).item() == pytest.approx(0.0, abs=1e-6)
    # a hard negative column for the query side: row 0 logits [2, 1.2, 0], row 1 [0, 1.6, 2]
    n = torch.tensor([[0.0, 1.0]])
    got = masked_info_nce(q, p, t, negatives=n, docs=torch.tensor([1, 2]), negative_docs=torch.tensor([3]))
    lse = math.log
    q_side = ((lse(math.e**2 + math.e**1.2 + 1) - 2) + (lse(1 + math.e**1.6 + math.e**2) - 1.6)) / 2
    p_side = ((lse(math.e**2 + 1) - 2) + (lse(math.e**1.2 + math.e**1.6) - 1.6)) / 2
    assert got.item() == pytest.approx(0.5 * (q_side + p_side), rel=1e-5)


def test_fusion_rule_is_chosen_where_the_two_scorers_complement():
    # query 0: dense ranks the gold first, BM25 third; query 1: the reverse; query 2: both mildly right
    dense = np.array([[0.9, 0.5, 0.4], [0.6, 0.7, 0.1], [0.5, 0.6, 0.4]])
    bm25 = np.array([[1.0, 3.0, 2.0], [1.0, 0.0, 9.0], [1.0, 2.0, 0.0]])
    gold = np.array([0, 2, 1])
    choice = choose_rule("selfval", dense, bm25, gold)
    assert choice["validation_mrr"] > max(choice["validation_mrr_dense"], choice["validation_mrr_bm25"])
    assert choice["validation_mrr"] == pytest.approx(mrr_of(fused_scores(dense, bm25, choice), gold))
    # weight 1 is SKR's own ranking, weight 0 BM25's
    assert mrr_of(fused_scores(dense, bm25, {"method": "wsum", "norm": "min-max", "weight": 1.0}), gold) == \
        pytest.approx(mrr_of(dense, gold))
    assert choose_rule("rrf")["method"] == "rrf"


@pytest.mark.parametrize("rule", [{"method": "rrf", "k": 60}, {"method": "wsum", "norm": "min-max", "weight": 0.3},
                                  {"method": "wsum", "norm": "zmuv", "weight": 0.55}])
def test_fusion_is_ranx_fuse_on_the_two_top_lists(rule):
    """The array fusion ranks every query's candidates as ranx's fuse does on the same top lists."""
    from ranx import Run, fuse

    rng = np.random.default_rng(3)
    dense, bm25 = rng.normal(size=(6, 40)), rng.gamma(2.0, size=(6, 40))  # no ties
    depth = 12

    def run(scores, name):
        top = np.argsort(-scores, axis=1)[:, :depth]
        return Run.from_dict({f"q{i}": {f"d{j}": float(scores[i, j]) for j in row} for i, row in enumerate(top)},
                             name=name)

    if rule["method"] == "rrf":
        theirs = fuse([run(dense, "a"), run(bm25, "b")], method="rrf", params={"k": rule["k"]})
    else:
        w = rule["weight"]
        theirs = fuse([run(dense, "a"), run(bm25, "b")], norm=rule["norm"], method="wsum",
                      params={"weights": [w, 1 - w]})
    ours = fused_scores(dense, bm25, rule, depth=depth)
    for q, docs in theirs.to_dict().items():
        row = int(q[1:])
        cols = [int(d[1:]) for d in docs]
        np.testing.assert_allclose(ours[row, cols], [docs[f"d{c}"] for c in cols], rtol=1e-9, atol=1e-12)
        rest = np.setdiff1d(np.arange(40), cols)
        assert ours[row, rest].max() < ours[row, cols].min()  # outside both lists: after every fused one


def test_rrf_is_reciprocal_rank_fusion_by_hand():
    dense = np.array([[0.9, 0.5, 0.1]])  # ranks d0, d1, d2
    bm25 = np.array([[0.0, 2.0, 1.0]])  # ranks d1, d2, d0
    fused = fused_scores(dense, bm25, {"method": "rrf", "k": 60})
    by_hand = [1 / 61 + 1 / 63, 1 / 62 + 1 / 61, 1 / 63 + 1 / 62]
    np.testing.assert_allclose(fused[0], by_hand, rtol=1e-6)
    # a candidate outside both top lists ranks after every fused one
    wide = np.concatenate([dense, [[-5.0]]], axis=1), np.concatenate([bm25, [[-5.0]]], axis=1)
    outside = fused_scores(*wide, {"method": "rrf"}, depth=3)[0]
    assert np.isfinite(outside[3]) and outside[3] < outside[:3].min()


@pytest.mark.parametrize("pooling", ["mean", "echo"])
def test_training_embeds_with_the_configured_pooling(tiny_model_dir, pooling):
    from skr_ray.config import ModelConfig
    from skr_ray.models.backbone import load_backbone
    from skr_ray.models.checkpoint import add_lora
    from skr_ray.models.encoding import embed_texts
    from skr_ray.models.heads import EmbeddingHead
    from skr_ray.tasks.ir.training import embed
    from skr_ray.train.loop import ReexpressionModel

    model, tok = load_backbone(ModelConfig(name_or_path=str(tiny_model_dir)))
    torch.manual_seed(0)
    engine = ReexpressionModel(add_lora(model, TrainConfig(lora_dropout=0.0)), EmbeddingHead(model.config.hidden_size))
    texts = ["revenue rose in 2019", "the tax rate fell"]
    with torch.no_grad():
        got = embed(engine, tok, texts, 32, "cpu", "e5v", pooling)
        last = embed(engine, tok, texts, 32, "cpu", "e5v")
    want = embed_texts(engine.backbone, tok, texts, 32, engine.head, "cpu", "e5v", pooling)  # evaluation's path
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got, last, atol=1e-3)
    with pytest.raises(ConfigError, match="pooling"):
        TrainConfig(pooling="max")


@pytest.mark.parametrize("cached_prefix", [False, True])
def test_training_grouped_by_length_gives_the_padded_batch_loss_and_gradients(tiny_model_dir, cached_prefix):
    from skr_ray.config import ModelConfig
    from skr_ray.models.backbone import load_backbone
    from skr_ray.models.checkpoint import add_lora
    from skr_ray.models.encoding import format_for_embedding, length_groups
    from skr_ray.models.heads import EmbeddingHead
    from skr_ray.models.prefix_cache import FrozenPrefixCache
    from skr_ray.train.loop import ReexpressionModel

    model, tok = load_backbone(ModelConfig(name_or_path=str(tiny_model_dir)))
    torch.manual_seed(0)
    n_layers = model.config.num_hidden_layers
    backbone = add_lora(model, TrainConfig(lora_dropout=0.0, lora_layers=1 if cached_prefix else 0))
    head = EmbeddingHead(model.config.hidden_size)
    texts = ["revenue rose", "the group's revenue rose sharply in 2023 and again in 2024 " * 4, "debt fell",
             "cash at the end of the year was higher than at its start " * 2]
    batch = format_for_embedding(tok, texts, 96, "e5v")
    assert len(length_groups(batch["attention_mask"].sum(1).tolist())) > 1  # the batch really is cut
    runs = []
    for grouped in (False, True):
        prefix = FrozenPrefixCache(n_layers - 1) if cached_prefix else None
        engine = ReexpressionModel(backbone, head, prefix, group_by_length=grouped)
        engine.zero_grad()
        out = engine(batch["input_ids"], batch["attention_mask"])  # (B, D)
        out.pow(2).sum().backward()
        grads = [p.grad.clone() for p in engine.parameters() if p.requires_grad]
        runs.append((out.detach(), grads))
    torch.testing.assert_close(runs[1][0], runs[0][0], atol=1e-5, rtol=1e-4)  # same rows, same order
    for grouped, padded in zip(runs[1][1], runs[0][1]):
        torch.testing.assert_close(grouped, padded, atol=1e-4, rtol=1e-3)
