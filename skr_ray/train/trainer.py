"""`skr train`: TorchTrainer setup around train_loop_per_worker, then export the final checkpoint."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from skr_ray.artifacts import Artifacts, StageError, StageInputError, skip_if_done, write_json
from skr_ray.config import SKRConfig
from skr_ray.models.checkpoint import HEAD_CONFIG
from skr_ray.train.checkpoints import BEST, export_checkpoint, latest_ray_checkpoint

log = logging.getLogger(__name__)

# head_info keys that fix the shapes and the inputs a checkpoint was trained with: a killed run resumes only
# under the same values (the threshold and class counts may differ; they are refitted or informational)
RESUME_KEYS = ("task", "objective", "layers", "hidden_size", "pooling", "prompt", "max_passage_tokens", "options",
               "target", "documents", "normalize")


def check_resume(checkpoint: Path, head_info: dict[str, Any], train_dir: Path) -> None:
    """Refuse to resume a killed training run whose checkpoint was made with other head settings (e.g. another
    ``ad.head_layer``): DeepSpeed would fail on its state with a key error that names no setting."""
    path = checkpoint / HEAD_CONFIG
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    changed = [f"{k}: {saved.get(k)!r} in the checkpoint, {head_info.get(k)!r} now"
               for k in RESUME_KEYS if saved.get(k) != head_info.get(k)]
    if changed:
        raise StageInputError(
            f"{train_dir} holds a killed training run made with other settings ({'; '.join(changed)}); "
            f"resume it with the settings it ran with, or delete {train_dir} (or pick another output_dir) "
            "to train afresh")


def plot_history(history: list[dict[str, Any]], path: Path, kept: int | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] + 1 for h in history]  # 0: the fitted starting head, before any step
    trained = [h for h in history if "train_loss" in h]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].plot([h["epoch"] + 1 for h in trained], [h["train_loss"] for h in trained], marker="o", label="train")
    if all("val_loss" in h for h in history):
        ax[0].plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    ax[0].set(xlabel="epoch", ylabel="training loss", title="loss")
    ax[0].legend()
    for key in ("val_recall@1", "val_auprc", "val_accuracy"):
        if history and all(key in h for h in history):
            ax[1].plot(epochs, [h[key] for h in history], marker="o", color="C2")
            ax[1].set(xlabel="epoch", ylabel=key[4:], title=f"self-labelled validation {key[4:]}")
            break
    if kept is not None and kept != history[-1]["epoch"]:
        for a in ax:
            a.axvline(kept + 1, color="grey", linestyle=":", label="kept epoch")
        ax[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@skip_if_done(lambda objective="head": "train" if objective == "head" else "sft")
def run_training(cfg: SKRConfig, objective: str = "head") -> dict[str, Any]:
    """Train the task head + LoRA (objective 'head', the SKR model) or, for tasks that answer
    through generation, LoRA through the LM head on the same self-labels (objective 'sft')."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from skr_ray.models.prefix_cache import prefix_cache_root
    from skr_ray.ray_utils import cluster_gpus, ensure_ray
    from skr_ray.registry import get_task

    art = Artifacts(cfg.output_dir)
    train_dir = art.train_dir if objective == "head" else art.sft_dir
    checkpoint_dir = train_dir / "checkpoint"
    if not art.is_done(art.annotate_dir):
        raise FileNotFoundError(f"no finished self-annotation in {art.annotate_dir}; run `skr annotate` first")
    ensure_ray(cfg.ray)
    start = time.perf_counter()

    task = get_task(cfg.task)  # registered by the caller (the CLI imports skr_ray.tasks)
    hooks = task.training_hooks()
    train_pairs, val_pairs = hooks.load_examples(cfg, art)
    log.info("self-labelled examples: %d train, %d validation", len(train_pairs), len(val_pairs))
    gpus = cluster_gpus()
    use_gpu = cfg.train.use_gpu if cfg.train.use_gpu is not None else gpus > 0
    workers = cfg.train.num_workers or (max(1, int(gpus)) if use_gpu else 1)
    head_info = {"task": cfg.task, "objective": objective, **hooks.head_info(cfg, train_pairs)}
    if objective == "sft":
        head_info.pop("layers", None)  # answers through the LM head: every decoder layer runs

    from skr_ray.models.backbone import materialize

    model_config = json.loads((materialize(cfg.model) / "config.json").read_text())
    hidden = model_config.get("text_config", model_config)["hidden_size"]  # vision-language: the text tower's
    head_info["hidden_size"] = hidden

    if len(train_pairs) < cfg.train.batch_size * workers:
        raise StageInputError(
            f"{len(train_pairs)} usable self-labelled training examples are fewer than one global batch "
            f"({cfg.train.batch_size} x {workers} workers); see {art.annotate_summary} for why labels were "
            "filtered, then lower train.batch_size or annotate more data"
        )
    storage = train_dir / "ray"
    storage.mkdir(parents=True, exist_ok=True)
    resume_from = latest_ray_checkpoint(storage)
    if resume_from:
        check_resume(resume_from, head_info, train_dir)
        log.info("resuming training from %s", resume_from)
    head_init = None
    if resume_from is None and hasattr(hooks, "initial_head_state"):  # a resumed run has its head already
        head_init = hooks.initial_head_state(cfg, art, train_pairs, val_pairs, head_info)
    # Ray Train's controller acts on its workers' reports, their end and their failures when it polls them,
    # every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default, read by the controller, which the driver's value
    # reaches). Every epoch's checkpoint waited for a poll: the test that kills a worker mid-run (6 tiny epochs,
    # two runs) took 35-40 s at 0.5 s against 47 s at 2 s. A poll is a few remote calls; a user's value is kept.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    trainer = TorchTrainer(
        train_loop_per_worker=_loop,
        train_loop_config={
            "cfg": _absolute_paths(cfg.to_dict()),
            "task": task,  # the workers reach the task's head and hooks through it
            "use_gpu": use_gpu,
            "train_examples": train_pairs,
            "val_examples": val_pairs,
            "head_info": head_info,
            "head_init": head_init,  # None = the head's own random initialisation
            "storage": str(storage),  # the loop resumes from the newest checkpoint found there
            "prefix_cache_dir": prefix_cache_root(cfg),
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=use_gpu,
            **({"resources_per_worker": {"GPU": cfg.train.gpus_per_worker}} if use_gpu else {})),
        run_config=ray.train.RunConfig(
            name="reexpression" if objective == "head" else "sft",
            storage_path=str(storage),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=2),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise StageError(f"training finished without a checkpoint: {result.error}")
    source = Path(result.checkpoint.path)
    if cfg.train.keep == "best_val_loss" and (storage / BEST).is_dir():
        source = storage / BEST
    export_checkpoint(source, checkpoint_dir, cfg)
    history = json.loads((Path(result.checkpoint.path) / "state.json").read_text())["history"]
    kept = json.loads((checkpoint_dir / "state.json").read_text())["epoch"]
    write_json(train_dir / "history.json", history)
    plot_history(history, train_dir / "curves.png", kept=kept)
    info = {"workers": workers, "use_gpu": use_gpu, "train_pairs": len(train_pairs),
            "val_pairs": len(val_pairs), "seconds": round(time.perf_counter() - start, 1),
            "kept_epoch": kept, "keep": cfg.train.keep,
            "final": {k: v for k, v in next(h for h in history if h["epoch"] == kept).items() if k != "step_losses"}}
    Artifacts.write_config(train_dir, cfg)
    Artifacts.mark_done(train_dir, info)
    log.info("training done: %s", json.dumps(info))
    return info


def _absolute_paths(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """The config with a relative model path made absolute: Ray Train's workers run in their trial folder, where
    ``model.name_or_path=runs/x`` would name nothing."""
    model = cfg_dict.get("model", {})
    path = Path(str(model.get("name_or_path", ""))).expanduser()
    if model.get("name_or_path") and not path.is_absolute() and path.exists():
        cfg_dict = {**cfg_dict, "model": {**model, "name_or_path": str(path.resolve())}}
    return cfg_dict


def run_training_stage(cfg: SKRConfig) -> dict[str, Any]:
    """`skr train`, the same for every task: the SKR model (LoRA + head), then, when it is evaluated, the SFT
    baseline (LoRA through the LM head on the same self-labels) under ``"sft"`` of the returned summary."""
    out = dict(run_training(cfg, objective="head"))
    if "sft" in cfg.evaluate.systems:
        out["sft"] = run_training(cfg, objective="sft")
    return out


def _loop(loop_config: dict[str, Any]) -> None:
    from skr_ray.train.loop import train_loop_per_worker

    train_loop_per_worker(loop_config)
