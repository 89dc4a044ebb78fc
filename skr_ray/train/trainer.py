"""`skr train`: TorchTrainer setup around train_loop_per_worker, then export the final checkpoint."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from skr_ray.artifacts import Artifacts, write_json
from skr_ray.config import SKRConfig
from skr_ray.models.checkpoint import ADAPTER, HEAD_CONFIG, HEAD_WEIGHTS, RUN_CONFIG

log = logging.getLogger(__name__)


def latest_ray_checkpoint(storage: Path) -> Path | None:
    """Newest complete checkpoint of an earlier (possibly killed) run of this stage."""
    candidates = []
    for state in storage.glob("**/checkpoint_*/state.json"):
        try:
            epoch = json.loads(state.read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            continue
        if (state.parent / "deepspeed" / "latest").is_file():
            candidates.append((epoch, state.stat().st_mtime, state.parent))
    return max(candidates)[2] if candidates else None


def plot_history(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] + 1 for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    if all("val_loss" in h for h in history):
        ax[0].plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    ax[0].set(xlabel="epoch", ylabel="contrastive loss", title="loss")
    ax[0].legend()
    if all("val_recall@1" in h for h in history):
        ax[1].plot(epochs, [h["val_recall@1"] for h in history], marker="o", color="C2")
    ax[1].set(xlabel="epoch", ylabel="R@1", title="self-labelled validation R@1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_training(cfg: SKRConfig) -> dict[str, Any]:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from skr_ray.ray_utils import cluster_gpus, ensure_ray
    from skr_ray.tasks.ir.pairs import load_pairs, split_pairs

    art = Artifacts(cfg.output_dir)
    if art.is_done(art.train_dir) and (art.checkpoint_dir / ADAPTER).is_dir():
        log.info("training already complete in %s; skipping", art.checkpoint_dir)
        return json.loads(art.train_history.read_text()) if art.train_history.is_file() else {}
    if not art.is_done(art.annotate_dir):
        raise FileNotFoundError(f"no finished self-annotation in {art.annotate_dir}; run `skr annotate` first")
    ensure_ray(cfg.ray)
    start = time.perf_counter()

    pairs = load_pairs(art.labels_dir, cfg.annotate.drop_duplicates)
    train_pairs, val_pairs = split_pairs(pairs, cfg.train.val_fraction, cfg.train.seed)
    log.info("self-labelled pairs: %d train, %d validation", len(train_pairs), len(val_pairs))
    gpus = cluster_gpus()
    use_gpu = cfg.train.use_gpu if cfg.train.use_gpu is not None else gpus > 0
    workers = cfg.train.num_workers or (max(1, int(gpus)) if use_gpu else 1)
    head_info = {
        "task": cfg.task,
        "pooling": "last_token",
        "prompt": cfg.train.embed_prompt,
        "normalize": True,
        "options": {},
    }

    from skr_ray.models.backbone import materialize

    hidden = json.loads((materialize(cfg.model) / "config.json").read_text())["hidden_size"]
    head_info["hidden_size"] = hidden

    art.ray_train_storage.mkdir(parents=True, exist_ok=True)
    resume_from = latest_ray_checkpoint(art.ray_train_storage)
    if resume_from:
        log.info("resuming training from %s", resume_from)
    trainer = TorchTrainer(
        train_loop_per_worker=_loop,
        train_loop_config={
            "cfg": cfg.to_dict(),
            "use_gpu": use_gpu,
            "train_pairs": [asdict(p) for p in train_pairs],
            "val_pairs": [asdict(p) for p in val_pairs],
            "head_info": head_info,
            "resume_from": str(resume_from) if resume_from else None,
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=ray.train.RunConfig(
            name="reexpression",
            storage_path=str(art.ray_train_storage),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=2),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without a checkpoint: {result.error}")
    export_checkpoint(Path(result.checkpoint.path), art, cfg)
    state = json.loads((art.checkpoint_dir / "state.json").read_text())
    history = state["history"]
    write_json(art.train_history, history)
    plot_history(history, art.train_dir / "curves.png")
    info = {"workers": workers, "use_gpu": use_gpu, "train_pairs": len(train_pairs),
            "val_pairs": len(val_pairs), "seconds": round(time.perf_counter() - start, 1),
            "final": history[-1]}
    Artifacts.write_config(art.train_dir, cfg)
    Artifacts.mark_done(art.train_dir, info)
    log.info("training done: %s", json.dumps(info))
    return info


def _loop(loop_config: dict[str, Any]) -> None:
    from skr_ray.train.loop import train_loop_per_worker

    train_loop_per_worker(loop_config)


def export_checkpoint(ray_checkpoint: Path, art: Artifacts, cfg: SKRConfig) -> None:
    """Copy the loadable parts (adapter, head, state) out of Ray's storage into train/checkpoint/."""
    target = art.checkpoint_dir
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copytree(ray_checkpoint / ADAPTER, tmp / ADAPTER)
    for name in (HEAD_CONFIG, HEAD_WEIGHTS, "state.json"):
        if (ray_checkpoint / name).is_file():
            shutil.copy2(ray_checkpoint / name, tmp / name)
    (tmp / RUN_CONFIG).write_text(cfg.to_yaml())
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
