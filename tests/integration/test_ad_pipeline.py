"""AD end to end on a real local Ray cluster: IR questions -> pairs -> yes/no self-judgement ->
SKR + SFT training (Ray Train + DeepSpeed) -> evaluation of base/SFT/head-only/SKR on labelled pairs.

The tiny model is rigged (see tests/tiny.make_yes_no_judge) so its greedy answers are yes or no;
everything else is the production code path.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from skr_ray.artifacts import Artifacts
from skr_ray.config import load_config
from skr_ray.corpus import iter_jsonl, demo_dir

from tests.tiny import LOOSE_FILTERS

pytestmark = pytest.mark.integration

def ad_config(model_dir, out, *extra):
    return load_config(
        None,
        [
            "task=ad",
            f"model.name_or_path={model_dir}",
            f"output_dir={out}",
            "data.max_docs=16",
            "annotate.batch_size=8",
            "annotate.max_new_tokens=6",
            "ad.hard_negatives=1",
            "ad.easy_negatives=1",
            "ad.max_passage_tokens=48",
            "ad.max_new_tokens=3",
            "ad.head_hidden=64",
            "ad.pos_weight=0",
            "train.epochs=2",
            "train.batch_size=8",
            "train.num_workers=1",
            "train.val_fraction=0.25",
            "evaluate.max_pairs=40",
            "evaluate.batch_size=8",
            "evaluate.head_only_epochs=3",
            *LOOSE_FILTERS,
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def ad_run(ray_local, tiny_judge_model_dir, tmp_path_factory):
    from tests.tiny import run_with_eval_hidden

    out = tmp_path_factory.mktemp("ad-run")
    # SKR's head starts from a probe on frozen states; the lowest-validation-loss epoch is kept. The head
    # systems read the state after the first of the tiny model's two layers; annotation and SFT use both.
    cfg = ad_config(tiny_judge_model_dir, out, "ad.head_init=probe", "train.keep=best_val_loss",
                    "train.keep_start=true", "ad.head_layer=1",
                    f"data.eval={out / 'evalset'}")
    return cfg, run_with_eval_hidden(cfg)


def test_self_judgements_are_counted_and_balanced(ad_run):
    from skr_ray.tasks.ad.annotate import read_judgements

    cfg, results = ad_run
    art = Artifacts(cfg.output_dir)
    summary = json.loads(art.annotate_summary.read_text())
    rows = read_judgements(art.labels_dir, quarantine=False)
    questions = summary["questions"]
    assert questions > 0 and summary["pairs"] == questions * 3 == len(rows)
    assert sum(summary["status_counts"].values()) == len(rows)
    balance = summary["class_balance"]
    assert balance["yes"] + balance["no"] == summary["usable"] == summary["status_counts"].get("ok", 0)
    assert balance["yes"] > 0 and balance["no"] > 0  # the rigged judge answers both ways
    kinds = {r["kind"] for r in rows}
    assert kinds == {"own", "hard", "easy"}
    for r in rows:
        assert 0.0 <= r["p_yes"] <= 1.0
        assert r["label"] == -1  # training pairs carry no human label
        if r["status"] == "ok":
            assert r["answer"] in (0, 1)
            # the generated word and the yes/no logits agree for a greedy first token
            assert (r["p_yes"] > 0.5) == (r["answer"] == 1)
        assert r["prompt_version"] == "ad-answerable-v1" and r["model_id"]
    # the IR questions that seed the pairs were written by the same pipeline, into OUTPUT_DIR/questions
    assert (Artifacts(cfg.output_dir + "/questions").annotate_dir / "_SUCCESS").is_file()


def test_checkpoints_and_thresholds(ad_run):
    from skr_ray.models.checkpoint import load_skr_model

    cfg, _ = ad_run
    art = Artifacts(cfg.output_dir)
    info = json.loads((art.checkpoint_dir / "head.json").read_text())
    assert info["task"] == "ad" and info["objective"] == "head" and info["options"]["hidden"] == 64
    assert 0.0 <= info["threshold"] <= 1.0
    assert info["pos_weight"] > 0
    history = json.loads(art.train_history.read_text())
    # epoch -1: the probe-started head before any LoRA step, a candidate for keep=best_val_loss
    assert [h["epoch"] for h in history] == [-1, 0, 1]
    assert "train_loss" not in history[0] and all("train_loss" in h for h in history[1:])
    assert all("val_loss" in h and "threshold" in h for h in history)
    best = min(history, key=lambda h: h["val_loss"])
    done = json.loads((art.train_dir / "_SUCCESS").read_text())
    assert done["keep"] == "best_val_loss" and done["kept_epoch"] == best["epoch"]
    assert json.loads((art.checkpoint_dir / "state.json").read_text())["epoch"] == best["epoch"]
    assert info["threshold"] == pytest.approx(best["threshold"])  # the kept epoch's own threshold
    sft = json.loads((art.sft_checkpoint_dir / "head.json").read_text())
    assert sft["objective"] == "sft" and not (art.sft_checkpoint_dir / "head.safetensors").exists()
    skr = load_skr_model(art.checkpoint_dir)  # no Ray needed
    import torch

    from skr_ray.models.encoding import decoder_body

    assert info["layers"] == 1 and len(decoder_body(skr.model).layers) == 1  # ad.head_layer=1: the decoder cut
    assert "layers" not in sft and len(decoder_body(load_skr_model(art.sft_checkpoint_dir).model).layers) == 2

    probs = torch.sigmoid(skr.head(torch.randn(3, skr.model.config.hidden_size)))
    assert probs.shape == (3,) and bool(((probs > 0) & (probs < 1)).all())


def test_report_values(ad_run):
    cfg, results = ad_run
    art = Artifacts(cfg.output_dir)
    metrics = json.loads(art.metrics.read_text())
    assert set(metrics) == {"base", "sft", "head_only", "skr"}
    import csv

    from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

    for name, row in metrics.items():  # every figure recomputed by scikit-learn from the per-pair scores file
        with (art.evaluate_dir / "scores" / f"{name}.tsv").open() as handle:
            pairs = list(csv.DictReader(handle, delimiter="\t"))
        y = np.array([int(r["label"]) for r in pairs])
        s = np.array([float(r["score"]) for r in pairs])
        assert len(pairs) == 40 and y.sum() == 8, name
        assert row["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9), name
        assert row["auprc"] == pytest.approx(average_precision_score(y, s), abs=1e-9), name
        lo, hi = row["auprc_ci95"]
        assert lo - 1e-12 <= row["auprc"] <= hi + 1e-12 and hi - lo > 0, name
        if "threshold" in row:
            assert row["accuracy"] == pytest.approx(accuracy_score(y, s >= row["threshold"]), abs=1e-9), name
        assert row["seconds_per_100"] > 0, name
    # 40 stratified pairs of the demo set's 1:4 ratio
    assert metrics["skr"]["positive_rate"] == pytest.approx(0.2)
    assert metrics["base"]["score_source"] == "softmax(yes,no)" and "auprc_generated_class" in metrics["base"]
    for name in ("pr_curve.png", "roc_curve.png", "report.md"):
        assert (art.evaluate_dir / name).stat().st_size > 0
    assert "| SKR (LoRA + classifier head) (`skr`)" in art.report.read_text()


def test_no_evaluation_text_reaches_training(ad_run):
    """Pairs for training are built from self-written questions only, never from the labelled file."""
    from skr_ray.tasks.ad.annotate import read_judgements

    cfg, _ = ad_run
    eval_queries = {row["query"] for _, row in iter_jsonl(demo_dir() / "answerability.jsonl",
                                                          fields=("query", "label"))}
    train_queries = {r["query"] for r in read_judgements(Artifacts(cfg.output_dir).labels_dir, quarantine=False)}
    assert not eval_queries & train_queries


def test_annotation_resume_redoes_nothing(ad_run):
    from skr_ray.tasks.ad.annotate import run_ad_annotation

    cfg, _ = ad_run
    art = Artifacts(cfg.output_dir)
    files = sorted(p.name for p in art.labels_dir.glob("*.parquet"))
    (art.annotate_dir / "_SUCCESS").unlink()
    summary = run_ad_annotation(cfg)
    assert summary["resumed_from_pairs"] == summary["pairs"]
    assert sorted(p.name for p in art.labels_dir.glob("*.parquet")) == files


def test_source_labels_from_the_same_questions(ad_run, tmp_path):
    """label_source=source: no judging; own passage = 1, others = 0; a judged labels dir is not mixed in."""
    from skr_ray.tasks.ad.annotate import read_judgements, run_ad_annotation

    cfg, _ = ad_run
    judged = run_ad_annotation(cfg)
    src_cfg = ad_config(cfg.model.name_or_path, tmp_path / "src", "ad.label_source=source",
                        f"ad.questions_from={cfg.output_dir}/questions")
    summary = run_ad_annotation(src_cfg)
    assert summary["label_source"] == "source" and summary["pairs"] == judged["pairs"]
    n_questions = summary["answers_by_pair_kind"]["own"]["yes"]
    assert summary["class_balance"]["yes"] == n_questions == summary["questions"]
    assert summary["answers_by_pair_kind"]["own"]["no"] == 0
    assert summary["answers_by_pair_kind"]["hard"]["yes"] == summary["answers_by_pair_kind"]["easy"]["yes"] == 0
    rows = read_judgements(Artifacts(src_cfg.output_dir).labels_dir)
    assert all(r["answer"] == (r["kind"] == "own") and r["status"] == "ok" for r in rows)
    # The judged run's labels cannot be resumed as source labels (or the other way round).
    (Artifacts(cfg.output_dir).annotate_dir / "_SUCCESS").rename(tmp_path / "success")
    try:
        with pytest.raises(ValueError, match="holds labels made with"):
            run_ad_annotation(ad_config(cfg.model.name_or_path, cfg.output_dir, "ad.label_source=source"))
    finally:
        (tmp_path / "success").rename(Artifacts(cfg.output_dir).annotate_dir / "_SUCCESS")


def test_eval_pair_pointing_to_missing_doc_is_a_clear_error(tmp_path):
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "revenue rose"}) + "\n")
    (tmp_path / "answerability.jsonl").write_text(
        json.dumps({"query_id": "q1", "query": "what rose?", "doc_id": "p-404", "label": 1}) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "skr_ray.cli", "evaluate", "task=ad", f"data.eval={tmp_path}",
         f"output_dir={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert "doc_id 'p-404' is not in" in proc.stderr and "answerability.jsonl:1" in proc.stderr
