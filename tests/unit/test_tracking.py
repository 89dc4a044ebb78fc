"""tracking.mlflow_uri: a run folder's stages land in one MLflow run of a local file store."""

from __future__ import annotations

import json

import pytest

from skr_ray.config import load_config


def test_stages_log_params_per_epoch_metrics_curves_and_final_metrics(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    from skr_ray.tracking import log_stage

    run_dir = tmp_path / "run"
    (run_dir / "train").mkdir(parents=True)
    (run_dir / "evaluate").mkdir()
    history = [{"epoch": 0, "train_loss": 1.25, "val_recall@1": 0.61}, {"epoch": 1, "train_loss": 0.5,
                                                                         "val_recall@1": 0.66}]
    (run_dir / "train" / "history.json").write_text(json.dumps(history))
    (run_dir / "train" / "curves.png").write_bytes(b"\x89PNG fake")
    (run_dir / "evaluate" / "metrics.json").write_text(json.dumps(
        {"skr": {"mrr": 0.4, "recall@1": 0.3}, "bm25": {"mrr": 0.46}, "od": {"ious": [0.1, 0.2]}}))
    (run_dir / "evaluate" / "report.md").write_text("# report\n")
    store = tmp_path / "mlruns"
    cfg = load_config(None, [f"output_dir={run_dir}", f"tracking.mlflow_uri=file:{store}", "train.epochs=2"])

    run_id = log_stage(cfg, "annotate", {"usable": 90, "status_counts": {"ok": 90, "empty": 3}})
    assert log_stage(cfg, "train", {"final": {"train_loss": 0.5}}) == run_id  # one MLflow run per output folder
    assert log_stage(cfg, "evaluate", {}) == run_id
    assert (run_dir / "mlflow_run_id").read_text() == run_id

    client = mlflow.tracking.MlflowClient(tracking_uri=f"file:{store}")
    run = client.get_run(run_id)
    assert run.info.run_name == "run" and run.data.params["train.epochs"] == "2"
    assert run.data.params["task"] == "ir" and run.data.tags["skr.task"] == "ir"
    losses = client.get_metric_history(run_id, "train.train_loss")
    assert [(m.step, m.value) for m in sorted(losses, key=lambda m: m.step)] == [(0, 1.25), (1, 0.5)]
    recall = sorted(client.get_metric_history(run_id, "train.val_recall_at_1"), key=lambda m: m.step)
    assert [m.value for m in recall] == [0.61, 0.66]
    m = run.data.metrics
    assert m["eval.skr.mrr"] == 0.4 and m["eval.bm25.mrr"] == 0.46 and m["eval.skr.recall_at_1"] == 0.3
    assert m["annotate.usable"] == 90 and m["annotate.status_counts.empty"] == 3 and m["train.final.train_loss"] == 0.5
    assert not any(k.startswith("eval.od") for k in m)  # lists are not metrics
    artifacts = {a.path for a in client.list_artifacts(run_id, "train")} | {
        a.path for a in client.list_artifacts(run_id, "evaluate")}
    assert {"train/curves.png", "train/history.json", "evaluate/metrics.json", "evaluate/report.md"} <= artifacts


def test_tracking_is_off_by_default(tmp_path):
    from skr_ray.tracking import log_stage

    cfg = load_config(None, [f"output_dir={tmp_path}"])
    assert cfg.tracking.mlflow_uri == "" and log_stage(cfg, "train", {}) is None
    assert not (tmp_path / "mlflow_run_id").exists()
