"""annotate -> train -> evaluate on a real local Ray cluster, with a tiny random Llama.

The tiny model writes gibberish, so the label filters are loosened; everything else (Ray Data actor
pool, Ray Train with two DeepSpeed workers and cross-worker negatives, Ray Data encoding, report) is
the production code path.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from skr_ray.artifacts import Artifacts
from skr_ray.config import load_config
from skr_ray.corpus import demo_dir, iter_jsonl

from tests.checks import ranx_metrics
from tests.tiny import LOOSE_FILTERS

pytestmark = pytest.mark.integration

def tiny_config(tiny_model_dir, out, *extra):
    return load_config(
        None,
        [
            f"model.name_or_path={tiny_model_dir}",
            f"output_dir={out}",
            "data.max_docs=24",
            "data.max_queries=12",
            "annotate.batch_size=4",
            "annotate.max_new_tokens=8",
            "train.epochs=2",
            "train.batch_size=4",
            "train.num_workers=2",
            "train.max_length=64",
            "evaluate.systems=[base,head_only,skr,bm25,skr_bm25]",
            "evaluate.head_only_epochs=3",
            "annotate.label_kinds=[question,keywords]",
            "annotate.num_actors=2",  # two actors reserve both CPUs of the test cluster: must not starve the reads
            "train.hard_negatives=1",
            "train.head_init=probe",
            "evaluate.max_length=64",
            *LOOSE_FILTERS,
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def pipeline_run(ray_local, tiny_model_dir, tmp_path_factory):
    from tests.tiny import run_with_eval_hidden

    out = tmp_path_factory.mktemp("run")
    cfg = tiny_config(tiny_model_dir, out, f"data.eval={out / 'evalset'}", f"tracking.mlflow_uri=file:{out / 'mlruns'}")
    return cfg, run_with_eval_hidden(cfg)


def test_annotation_labels_every_document_once(pipeline_run):
    cfg, result = pipeline_run
    art = Artifacts(cfg.output_dir)
    table = pq.read_table(art.labels_dir)
    ids = table["doc_id"].to_pylist()
    corpus_ids = [row["_id"] for _, row in iter_jsonl(demo_dir() / "corpus.jsonl")]
    assert len(ids) == 48 and len(set(ids)) == 24  # one label of each kind per document
    assert set(ids) <= set(corpus_ids)
    kinds = Counter(zip(table["label_kind"].to_pylist(), table["prompt_version"].to_pylist()))
    assert kinds == {("question", "ir-question-v3-oneshot"): 24, ("keywords", "ir-keywords-v2-oneshot"): 24}
    assert all(m.endswith(str(cfg.model.name_or_path).split("/")[-1]) for m in table["model_id"].to_pylist())
    summary = result["annotate"]
    assert summary["documents_labelled"] == 24 and sum(summary["status_counts"].values()) == 48
    assert summary["expected_label_rows"] == 48 and sum(summary["usable_per_kind"].values()) == summary["usable"]
    assert (art.annotate_dir / "config.yaml").is_file()


def test_training_used_two_workers_and_wrote_a_loadable_checkpoint(pipeline_run):
    import torch

    from skr_ray.models.checkpoint import load_skr_model
    from skr_ray.models.encoding import embed_texts

    cfg, result = pipeline_run
    info = result["train"]
    assert info["workers"] == 2 and info["use_gpu"] is False
    history = json.loads(Artifacts(cfg.output_dir).train_history.read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    examples = json.loads((Artifacts(cfg.output_dir).train_dir / "examples.json").read_text())
    assert examples["kept"] == info["train_pairs"] and examples["negatives_found"] == examples["kept"]
    assert list((Artifacts(cfg.output_dir).root / "cache" / "frozen_prefix").glob("*/shard-*.pt")) or \
        not cfg.train.cache_frozen_prefix
    assert all(np.isfinite(h["train_loss"]) and h["train_loss"] > 0 for h in history)
    skr = load_skr_model(Artifacts(cfg.output_dir).checkpoint_dir)  # no Ray needed
    emb = embed_texts(skr.model, skr.tokenizer, ["revenue rose", "debt fell"], 32, skr.head)
    assert emb.shape == (2, 32)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    trained = [n for n, p in skr.model.named_parameters() if "lora_B" in n and p.abs().sum() > 0]
    assert trained, "LoRA B matrices are still zero: the adapter did not learn"
    # train.head_init=probe: a projection head, started from the head-only fit, not the identity any more
    assert skr.head_info["options"] == {"projection": True}
    assert not torch.allclose(skr.head.proj.weight, torch.eye(32), atol=1e-3)


def test_evaluation_report(pipeline_run):
    from skr_ray.corpus import read_eval_set
    from skr_ray.evaluate.baselines import bm25_scores
    from skr_ray.evaluate.metrics import first_relevant_ranks, retrieval_metrics

    cfg, result = pipeline_run
    art = Artifacts(cfg.output_dir)
    metrics = json.loads(art.metrics.read_text())
    assert set(metrics) == {"base", "head_only", "skr", "bm25", "skr_bm25"}
    fusion = json.loads((art.evaluate_dir / "fusion.json").read_text())
    assert fusion["rule"] == "selfval" and fusion["chosen_by"] == "self-labelled validation"
    # chosen for the validation questions among the whole unlabeled corpus (the 24 annotated passages)
    assert fusion["validation_passages"] == 24 and fusion["validation_questions"] >= 2
    assert fusion["validation_mrr"] >= max(fusion["validation_mrr_dense"], fusion["validation_mrr_bm25"])
    curve = json.loads((art.evaluate_dir / "fusion_curve.json").read_text())["evaluation"]
    chosen = curve["rrf"] if fusion["method"] == "rrf" else \
        curve[fusion["norm"]][[round(w, 2) for w in curve["weights"]].index(round(fusion["weight"], 2))]
    assert metrics["skr_bm25"]["mrr"] == pytest.approx(chosen)  # the curve's point of the chosen rule is the system
    assert curve["min-max"][0] == pytest.approx(metrics["bm25"]["mrr"])  # weight 0: BM25 alone
    assert curve["min-max"][-1] == pytest.approx(metrics["skr"]["mrr"])  # weight 1: SKR alone
    assert (art.evaluate_dir / "fusion_curve.png").stat().st_size > 10_000
    for name, row in metrics.items():  # every figure recomputed by ranx from the system's TREC run file
        got = ranx_metrics(art, name, [1, 3, 5, 10])
        assert {k: row[k] for k in got} == pytest.approx(got, abs=1e-9), name
    ev = read_eval_set(cfg.data.eval, cfg.data.max_chars, 12)
    q, d = list(ev.queries), list(ev.corpus)
    expected = retrieval_metrics(
        first_relevant_ranks(bm25_scores([ev.queries[i] for i in q], [ev.corpus[i] for i in d]), d, q, ev.qrels), [1, 3, 5, 10]
    )
    assert metrics["bm25"]["mrr"] == pytest.approx(expected["mrr"])
    assert metrics["skr"] != metrics["base"]
    report = art.report.read_text()
    assert "| SKR (LoRA re-expression) (`skr`)" in report
    # the demo evaluates on the corpus it annotated: its 24 annotated passages are marked as seen
    assert f"- 24 of {len(ev.corpus)} candidates were also in the unlabeled corpus" in report
    assert (art.evaluate_dir / "recall_at_k.png").stat().st_size > 10_000


def test_the_run_is_tracked_in_mlflow(pipeline_run):
    """tracking.mlflow_uri: params, per-epoch training metrics and the evaluation metrics of the run that wrote them."""
    from mlflow.tracking import MlflowClient

    cfg, _ = pipeline_run
    art = Artifacts(cfg.output_dir)
    client = MlflowClient(tracking_uri=cfg.tracking.mlflow_uri)
    run = client.get_run((art.root / "mlflow_run_id").read_text())
    assert run.data.params["train.num_workers"] == "2"
    history = json.loads((art.train_dir / "history.json").read_text())
    losses = sorted(client.get_metric_history(run.info.run_id, "train.train_loss"), key=lambda m: m.step)
    assert [m.value for m in losses] == pytest.approx([h["train_loss"] for h in history])
    metrics = json.loads(art.metrics.read_text())
    assert run.data.metrics["eval.skr.mrr"] == pytest.approx(metrics["skr"]["mrr"])


def test_rerun_skips_finished_stages(pipeline_run):
    from skr_ray.cli import run_pipeline

    cfg, result = pipeline_run
    again = run_pipeline(cfg)
    assert again["evaluate"] == result["evaluate"]
    assert again["annotate"]["documents_labelled"] == 24


def test_training_resumes_from_last_checkpoint(ray_local, pipeline_run, tmp_path):
    """Drop the finished marker and ask for one more epoch: training continues from epoch 2's state."""
    import shutil

    from skr_ray.train.trainer import run_training

    cfg, _ = pipeline_run
    art = Artifacts(cfg.output_dir)
    first = json.loads(art.train_history.read_text())
    (art.train_dir / "_SUCCESS").unlink()
    shutil.rmtree(art.checkpoint_dir)
    longer = tiny_config(cfg.model.name_or_path, cfg.output_dir, "train.epochs=3")
    run_training(longer)
    history = json.loads(art.train_history.read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert history[:2] == first  # the first two epochs were not redone


def test_model_scores_rank_the_corpus_as_the_checkpoint_embeds_it(tiny_model_dir, tmp_path, ray_local):
    """SKR re-mining (train.mining_checkpoint): a checkpoint's query-passage similarities, encoded on the Ray
    Data pool, in the corpus' sorted id order and the queries' order."""
    import numpy as np

    from skr_ray.config import load_config
    from skr_ray.models.checkpoint import load_skr_model
    from skr_ray.models.encoding import embed_texts
    from skr_ray.tasks.ir.mining import model_scores
    from tests.tiny import make_checkpoint

    ckpt = make_checkpoint(tiny_model_dir, tmp_path / "ckpt", seed=3)
    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", f"output_dir={tmp_path / 'run'}",
                             "evaluate.max_length=64", "evaluate.num_actors=1"])
    corpus = {"b": "the tax rate fell to 21 percent", "a": "revenue grew in 2019", "c": "leases run seven years"}
    queries = ["what was the tax rate", "how long do the leases run in years"]
    got = model_scores(cfg, str(ckpt), queries, corpus, tmp_path / "cache")
    skr = load_skr_model(ckpt)
    embed = lambda texts: embed_texts(skr.model, skr.tokenizer, texts, 64, skr.head, "cpu", "e5v").numpy()  # noqa: E731
    np.testing.assert_allclose(got, embed(queries) @ embed([corpus[d] for d in "abc"]).T, atol=1e-4)
    assert got.shape == (2, 3) and len(list((tmp_path / "cache").glob("*.npz"))) == 2
