"""The real bundled SmolLM2-135M-Instruct, end to end on a handful of demo paragraphs."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest

from skr_ray.artifacts import Artifacts
from skr_ray.config import load_config
from skr_ray.corpus import demo_dir
from tests.checks import ranx_metrics

pytestmark = [pytest.mark.smoke, pytest.mark.integration]


@pytest.fixture(scope="module")
def small_beir(tmp_path_factory):
    """12 demo paragraphs and the demo questions whose gold paragraph is among them."""
    root = tmp_path_factory.mktemp("beir")
    corpus = [json.loads(l) for l in (demo_dir() / "corpus.jsonl").read_text().splitlines()][:12]
    keep = {r["_id"] for r in corpus}
    qrels = [l.split("\t") for l in (demo_dir() / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    qrels = [q for q in qrels if q[1] in keep]
    qids = {q[0] for q in qrels}
    queries = [json.loads(l) for l in (demo_dir() / "queries.jsonl").read_text().splitlines()]
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries if q["_id"] in qids))
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join("\t".join(q) + "\n" for q in qrels))
    return root


def test_smollm2_annotate_train_evaluate(ray_local, small_beir, tmp_path):
    from skr_ray.cli import run_pipeline

    cfg = load_config(None, [
        f"output_dir={tmp_path}", f"data.unlabeled={small_beir}", f"data.eval={small_beir}",
        "data.max_docs=8", "annotate.batch_size=8", "train.epochs=1", "train.batch_size=4",
        "train.max_length=96", "evaluate.systems=[base,skr,bm25]", "evaluate.max_length=96",
        "train.lora_layers=6", "train.cache_frozen_prefix=true", "train.gradient_checkpointing=false",  # demo.yaml's
    ])
    result = run_pipeline(cfg)

    table = pq.read_table(Artifacts(tmp_path).labels_dir).to_pylist()
    assert len(table) == 8
    assert all("smollm2" in r["model_id"].lower() for r in table)
    usable = [r for r in table if r["status"] == "ok"]
    assert len(usable) >= 5, [r["raw_output"] for r in table]
    words = lambda s: set(re.findall(r"[a-z]{4,}", s.lower()))  # noqa: E731
    grounded = [r for r in usable if r["label"].endswith("?") and words(r["label"]) & words(r["text"])]
    assert len(grounded) >= 0.8 * len(usable), "questions should be about their own paragraph"

    assert result["train"]["train_pairs"] + result["train"]["val_pairs"] == len(usable)
    metrics = result["evaluate"]
    assert set(metrics) == {"base", "skr", "bm25"}
    for name, row in metrics.items():  # every figure recomputed by ranx from the system's TREC run file
        got = ranx_metrics(Artifacts(tmp_path), name, [1, 3, 5, 10])
        assert {k: row[k] for k in got} == pytest.approx(got, abs=1e-9), name
    assert metrics["bm25"]["mrr"] > 0.5  # the demo questions (BM25 0.91 MRR over the whole demo corpus)


@pytest.mark.long  # the same equality with tiny models: tests/unit/test_model_parts.py, test_fewshot_prompts.py
def test_smollm2_labels_from_the_cached_opening_equal_the_plain_batch():
    """annotate.reuse_opening: the shared opening's KV cache changes the cost, not the greedy labels."""
    from skr_ray.annotate.generation import GenerationEngine
    from skr_ray.models.backbone import load_backbone
    from skr_ray.tasks.ir.prompts import build_kind_messages

    cfg = load_config(None, [])
    model, tok = load_backbone(cfg.model)
    engine = GenerationEngine(model, tok, cfg.annotate.max_input_tokens, cfg.annotate.max_new_tokens)
    texts = [json.loads(l)["text"] for l in (demo_dir() / "corpus.jsonl").read_text().splitlines()][:8]
    messages = [build_kind_messages(engine.truncate(t), "question") for t in texts]
    prompts = [engine.render(m) for m in messages]
    plain = engine.generate(prompts)
    cached = engine.generate(prompts, opening=engine.render_opening(messages[0]))
    assert cached == plain
    assert sum(q[0].endswith("?") for q in plain) >= 6 and engine.opening_fallbacks == 0
