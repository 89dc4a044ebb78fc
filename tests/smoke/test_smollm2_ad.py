"""The real bundled SmolLM2-135M-Instruct on the AD task: self-judged pairs, SKR head, evaluation."""

from __future__ import annotations

import json
import re

import pytest

from skr_ray.artifacts import Artifacts
from skr_ray.config import load_config
from tests.checks import sklearn_metrics

# SmolLM2 end to end is test_smollm2_end_to_end (IR); AD's parts are test_ad_pipeline with a tiny judge
pytestmark = [pytest.mark.smoke, pytest.mark.integration, pytest.mark.long]


def test_smollm2_ad_end_to_end(ray_local, tmp_path):
    from skr_ray.cli import run_pipeline
    from skr_ray.tasks.ad.annotate import read_judgements

    cfg = load_config(None, [
        "task=ad", f"output_dir={tmp_path}", "data.max_docs=4", "annotate.batch_size=8",
        "ad.hard_negatives=1", "ad.easy_negatives=1", "ad.max_passage_tokens=96",
        "train.epochs=1", "train.batch_size=4", "train.val_fraction=0.2",
        # top-6 LoRA over the cached frozen prefix (configs/tatqa_ad.yaml's CPU setting): the same code paths
        "train.lora_layers=6", "train.cache_frozen_prefix=true", "train.gradient_checkpointing=false",
        "evaluate.systems=[base,skr]", "evaluate.max_pairs=10", "evaluate.batch_size=10",
    ])
    result = run_pipeline(cfg)

    rows = read_judgements(Artifacts(tmp_path).labels_dir, quarantine=False)
    summary = result["annotate"]
    assert len(rows) == summary["pairs"] == 3 * summary["questions"] > 0
    parsed = [r for r in rows if r["status"] == "ok"]
    assert len(parsed) >= 0.75 * len(rows), [r["raw_output"] for r in rows]
    for r in parsed:
        assert 0.0 < r["p_yes"] < 1.0
        # p_yes pools every spelling of yes vs no, so it can sit just across 0.5 from the single
        # greedy token; away from the boundary the two must agree.
        if re.match(r"^\W*(yes|no)\b", r["raw_output"].lower()) and abs(r["p_yes"] - 0.5) > 0.05:
            assert (r["p_yes"] > 0.5) == (r["answer"] == 1), (r["raw_output"], r["p_yes"])

    metrics = result["evaluate"]
    assert set(metrics) == {"base", "skr"}
    for name, row in metrics.items():  # recomputed by scikit-learn from the per-pair scores file
        got = sklearn_metrics(Artifacts(tmp_path), name)
        assert got["pairs"] == 10 and row["positive_rate"] == pytest.approx(0.2), name
        assert (row["auroc"], row["auprc"]) == pytest.approx((got["auroc"], got["auprc"]), abs=1e-9), name
    info = json.loads((Artifacts(tmp_path).checkpoint_dir / "head.json").read_text())
    assert info["task"] == "ad" and "threshold" in info
