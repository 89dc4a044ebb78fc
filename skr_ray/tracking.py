"""Experiment tracking: each finished stage of a run is logged to MLflow when ``tracking.mlflow_uri`` is set.

One MLflow run per SKR output folder (its id is kept in ``OUTPUT_DIR/mlflow_run_id``, so annotate, train and
evaluate, resumed or not, land in the same MLflow run): the resolved config as params, annotation counts,
per-epoch training metrics (step = epoch) with the curves plot, and every system's evaluation metrics with the
report and plots as artifacts. Off by default. A ``file:`` URI is a local store that works offline (MLflow keeps
its file backend in maintenance mode; it is enabled here explicitly), ``http(s)://`` a tracking server.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from skr_ray.artifacts import Artifacts
from skr_ray.config import SKRConfig

log = logging.getLogger(__name__)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _numbers(tree: dict[str, Any], prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in _flatten(tree, prefix).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _client(cfg: SKRConfig) -> tuple[Any, str]:
    """(MlflowClient, run id) of this output folder's MLflow run, created on first use."""
    uri = cfg.tracking.mlflow_uri
    try:
        import mlflow  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("tracking.mlflow_uri is set but MLflow is not installed: pip install 'skr_ray[tracking]'"
                           ) from exc
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        Path(uri[len("file:"):]).expanduser().mkdir(parents=True, exist_ok=True)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    marker = Path(cfg.output_dir) / "mlflow_run_id"
    if marker.is_file():
        run_id = marker.read_text().strip()
        try:
            client.get_run(run_id)
            return client, run_id
        except Exception:  # noqa: BLE001 - a run of another store: start a new one
            log.info("MLflow run %s is not in %s; starting a new one", run_id, uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(cfg.tracking.experiment)
    run = client.create_run(experiment_id, run_name=cfg.tracking.run_name or Path(cfg.output_dir).name,
                            tags={"skr.task": cfg.task, "skr.output_dir": str(Path(cfg.output_dir).resolve())})
    params = {k: str(v)[:500] for k, v in _flatten(cfg.to_dict()).items()}
    items = list(params.items())
    from mlflow.entities import Param

    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in items[i : i + 100]])
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(run.info.run_id)
    return client, run.info.run_id


def _log_metrics(client: Any, run_id: str, values: dict[str, float], step: int = 0) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k.replace("@", "_at_"), v, now, step) for k, v in values.items()]
    for i in range(0, len(metrics), 500):
        client.log_batch(run_id, metrics=metrics[i : i + 500])


def log_stage(cfg: SKRConfig, stage: str, result: dict[str, Any] | None) -> str | None:
    """Log what a finished stage wrote; returns the MLflow run id (None when tracking is off)."""
    if not cfg.tracking.mlflow_uri:
        return None
    client, run_id = _client(cfg)
    art = Artifacts(cfg.output_dir)
    if stage == "annotate" and isinstance(result, dict):
        _log_metrics(client, run_id, _numbers(result, "annotate."))
    elif stage == "train":
        history_path = art.train_dir / "history.json"
        history = json.loads(history_path.read_text()) if history_path.is_file() else []
        for row in history:  # per-epoch curves, step = epoch
            _log_metrics(client, run_id, _numbers({k: v for k, v in row.items() if k != "epoch"}, "train."),
                         step=int(row.get("epoch", 0)))
        if isinstance(result, dict):
            _log_metrics(client, run_id, _numbers(result.get("final", {}), "train.final."))
        for name in ("curves.png", "history.json", "examples.json"):
            if (art.train_dir / name).is_file():
                client.log_artifact(run_id, str(art.train_dir / name), artifact_path="train")
    elif stage == "evaluate":
        metrics_path = art.evaluate_dir / "metrics.json"
        if metrics_path.is_file():
            _log_metrics(client, run_id, _numbers(json.loads(metrics_path.read_text()), "eval."))
        for path in sorted(art.evaluate_dir.glob("*")):
            if path.is_file() and path.suffix in (".json", ".md", ".png"):
                client.log_artifact(run_id, str(path), artifact_path="evaluate")
    log.info("logged %s to MLflow run %s (%s)", stage, run_id, cfg.tracking.mlflow_uri)
    return run_id
