"""train_loop_per_worker: DeepSpeed engine over a PEFT backbone + task head, on every Ray Train worker."""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skr_ray.config import SKRConfig, from_dict

log = logging.getLogger(__name__)

INITIAL_EPOCH = -1  # history entry of the model before any training step (a fitted starting head)


class ReexpressionModel(nn.Module):
    """PEFT backbone -> final-token state -> task head (the LM head is bypassed)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, prefix_cache: Any = None,
                 group_by_length: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.prefix_cache = prefix_cache  # FrozenPrefixCache when only the top layers train
        self.group_by_length = group_by_length  # text batches as passes over rows of similar length

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
                pool_mask: torch.Tensor | None = None, **images: torch.Tensor) -> torch.Tensor:
        """Text inputs, or (vision-language backbones) text with image inputs such as ``pixel_values``.

        With ``labels`` (an answer-as-text SFT baseline) the backbone's own next-token loss is returned instead.
        ``pool_mask`` (mean and echo pooling) selects the tokens whose states are averaged.
        """
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if pool_mask is not None:
            batch["pool_mask"] = pool_mask
        if labels is not None:
            return self.backbone(**batch, **images, labels=labels, use_cache=False).loss
        if images:
            from skr_ray.models.vision import image_final_states

            return self.head(image_final_states(self.backbone, {**batch, **images}))  # (B, out)
        if self.group_by_length:  # same states as one padded pass (attention never crosses rows)
            from skr_ray.models.encoding import states_by_length

            return self.head(states_by_length(self._text_states, batch))  # the head sees the whole batch, in order
        return self.head(self._text_states(batch))  # (B, D)

    def _text_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from skr_ray.models.encoding import decoder_body, final_token_states

        if self.prefix_cache is not None:
            return self.prefix_cache.final_token_states(decoder_body(self.backbone), batch)
        return final_token_states(self.backbone, batch)


def build_model(cfg: SKRConfig, task: Any, head_info: dict[str, Any], device: Any, head_init: Any = None,
                prefix_cache_dir: str | None = None) -> tuple["ReexpressionModel", Any]:
    """One worker's model (backbone with LoRA, the task's head, the frozen-prefix cache) and tokenizer, on
    ``device``: what ``train_loop_per_worker`` trains, and what a plain loop (benchmarks/train_throughput.py)
    trains without Ray or DeepSpeed."""
    from skr_ray.models.backbone import load_backbone
    from skr_ray.models.checkpoint import add_lora, head_layers

    hooks = task.training_hooks()
    backbone, tokenizer = load_backbone(cfg.model, device=device, layers=head_layers(head_info))
    if cfg.train.gradient_checkpointing:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    backbone = add_lora(backbone, cfg.train)
    if hasattr(hooks, "build_head"):  # tasks with more than one objective (e.g. AD's SFT baseline)
        head: nn.Module = hooks.build_head(backbone, head_info)
    else:
        head = task.make_head(backbone.config.get_text_config().hidden_size, head_info.get("options", {}))
    if head_init is not None:  # e.g. a probe fitted on frozen states (AD head_init=probe)
        head.load_state_dict(head_init)
    model = ReexpressionModel(backbone, head, _prefix_cache(cfg, backbone, prefix_cache_dir),
                              group_by_length=cfg.train.group_by_length).to(device)
    return model, tokenizer


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train

    cfg = from_dict(loop_config["cfg"])
    use_gpu = torch.cuda.is_available() and loop_config.get("use_gpu", False)
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if use_gpu else "cpu")
    import deepspeed

    from skr_ray.models.backbone import set_threads
    from skr_ray.train.deepspeed_config import build_deepspeed_config, torch_optimizer

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    local_world = ctx.get_local_world_size()
    device = ray.train.torch.get_device() if use_gpu else torch.device("cpu")
    set_threads(cfg.model, replicas=local_world)
    torch.manual_seed(cfg.train.seed)

    task = loop_config["task"]  # the Task of cfg.task, from the trainer
    hooks = task.training_hooks()
    head_info = dict(loop_config["head_info"])
    model, tokenizer = build_model(cfg, task, head_info, device, loop_config.get("head_init"),
                                   loop_config.get("prefix_cache_dir"))
    backbone, head = model.backbone, model.head
    from skr_ray.train.checkpoints import BEST, export_checkpoint, latest_ray_checkpoint

    train_examples = loop_config["train_examples"]
    val_examples = loop_config["val_examples"]
    # The newest complete checkpoint in this run's storage: a killed earlier run's, or this run's
    # before Ray Train restarted the worker group. Read from disk, not ray.train.get_checkpoint(): a
    # worker killed right after writing a checkpoint can die before Ray Train registers the report.
    resume_dir = latest_ray_checkpoint(Path(loop_config["storage"]))
    fitted_start = loop_config.get("head_init") is not None
    if resume_dir is None and not fitted_start and hasattr(hooks, "fit_start_head"):
        # a head fitted here, on the states the model gives before any LoRA step (e.g. IR train.head_init=probe)
        state = hooks.fit_start_head(model, tokenizer, train_examples, cfg, device, head_info)
        if state is not None:
            _same_on_every_worker(state)
            model.head.load_state_dict(state)
            fitted_start = True
            if rank == 0:
                log.info("starting head fitted on the frozen states of %d training pairs", len(train_examples))
    trainable = [p for p in model.parameters() if p.requires_grad]
    if rank == 0:
        n_train = sum(p.numel() for p in trainable)
        n_all = sum(p.numel() for p in model.parameters())
        log.info("trainable parameters: %d of %d (%.3f%%)", n_train, n_all, 100 * n_train / n_all)

    ds_config = build_deepspeed_config(cfg.train, world, use_gpu, bf16=cfg.model.dtype == "bfloat16")
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=trainable, config=ds_config,
                                           optimizer=torch_optimizer(cfg.train, use_gpu, trainable))

    bs = cfg.train.batch_size
    steps_per_epoch = len(train_examples) // (bs * world)
    if cfg.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
    if steps_per_epoch < 1:
        raise ValueError(
            f"{len(train_examples)} training pairs are fewer than one global batch "
            f"({bs} x {world} workers); lower train.batch_size or label more documents"
        )

    start_epoch, history, resumes = 0, [], []
    if resume_dir is not None:
        engine.load_checkpoint(str(resume_dir / "deepspeed"), tag="state", load_module_strict=False)
        state = json.loads((resume_dir / "state.json").read_text())
        start_epoch, history = state["epoch"] + 1, state["history"]
        resumes = state.get("resumed_at_epochs", []) + [start_epoch]  # restarts: a killed run or worker
        if rank == 0:
            log.info("resumed from epoch %d checkpoint", state["epoch"])

    from tqdm.auto import tqdm

    best_loss = min((h["val_loss"] for h in history if "val_loss" in h), default=float("inf"))
    if (start_epoch == 0 and fitted_start and val_examples
            and cfg.train.keep == "best_val_loss" and cfg.train.keep_start):
        # A fitted starting head (e.g. AD's probe) with LoRA at its identity start is a model in its own
        # right: epoch -1, kept when no training epoch validates better, so SKR never ends below its start.
        metrics = _validate_into({"epoch": INITIAL_EPOCH}, history, hooks, engine, tokenizer, val_examples, cfg,
                                 device, head_info)
        if rank == 0:
            log.info("before training (the fitted starting head): %s", json.dumps(metrics))
        if metrics.get("val_loss", float("inf")) < best_loss:
            best_loss = metrics["val_loss"]
            if rank == 0:
                with tempfile.TemporaryDirectory() as tmp:
                    _save_loadable(Path(tmp), backbone, head, head_info, INITIAL_EPOCH, history, resumes)
                    export_checkpoint(Path(tmp), Path(loop_config["storage"]) / BEST, cfg)

    for epoch in range(start_epoch, cfg.train.epochs):
        rng = random.Random(cfg.train.seed * 1000 + epoch)  # same permutation on every worker
        order = list(range(len(train_examples)))
        rng.shuffle(order)
        engine.train()
        t0, losses, first_step = time.perf_counter(), [], 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=rank != 0,
                   mininterval=10)
        for step in bar:
            base = step * bs * world + rank * bs
            chunk = [train_examples[i] for i in order[base : base + bs]]
            loss = hooks.batch_loss(engine, tokenizer, chunk, cfg, device, head_info)
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
            if step == 0:
                first_step = time.perf_counter() - t0
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        elapsed = time.perf_counter() - t0
        metrics = {
            "epoch": epoch,
            "train_loss": float(sum(losses) / len(losses)),
            "samples_per_s": steps_per_epoch * bs * world / elapsed,
            "epoch_seconds": elapsed,
            "step_losses": losses,  # this worker's (rank 0's in the history): a run can be checked step by step
        }
        if steps_per_epoch > 1:  # without the first step (lazy set-up, cold caches), as a plain loop is timed
            metrics["steady_samples_per_s"] = (steps_per_epoch - 1) * bs * world / max(elapsed - first_step, 1e-9)
        _validate_into(metrics, history, hooks, engine, tokenizer, val_examples, cfg, device, head_info)
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            engine.save_checkpoint(str(tmp_path / "deepspeed"), tag="state", exclude_frozen_parameters=True)
            if rank == 0:
                _save_loadable(tmp_path, backbone, head, head_info, epoch, history, resumes)
                shown = {k: v for k, v in metrics.items() if k != "step_losses"}
                log.info("epoch %d: %s", epoch + 1, json.dumps(shown))
            if metrics.get("val_loss", float("inf")) < best_loss:
                best_loss = metrics["val_loss"]
                if rank == 0 and cfg.train.keep == "best_val_loss":  # loadable parts only, no optimizer
                    export_checkpoint(tmp_path, Path(loop_config["storage"]) / BEST, cfg)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _same_on_every_worker(state: dict[str, torch.Tensor]) -> None:
    """Rank 0's tensors on every worker (in place): each worker fits the starting head on the same data, and
    this makes them bit-identical whatever the hardware's rounding."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for tensor in state.values():
            dist.broadcast(tensor, src=0)


def _validate_into(metrics: dict, history: list[dict], hooks: Any, engine: Any, tokenizer: Any,
                   val_examples: list, cfg: Any, device: torch.device, head_info: dict) -> dict:
    """Validate in eval mode, adopt the decision threshold picked on the self-labelled validation split
    (when the task picks one) and append the epoch's metrics to the history."""
    engine.eval()
    metrics.update(hooks.validate(engine, tokenizer, val_examples, cfg, device, head_info))
    engine.train()
    if "threshold" in metrics:
        head_info["threshold"] = metrics["threshold"]
    history.append(metrics)
    return metrics


def _save_loadable(path: Path, backbone: nn.Module, head: nn.Module, head_info: dict, epoch: int,
                   history: list[dict], resumes: list[int]) -> None:
    """The parts a checkpoint is loaded from: adapter, head (with its info) and the training state."""
    from skr_ray.models.checkpoint import ADAPTER, save_head

    backbone.save_pretrained(str(path / ADAPTER))
    save_head(path, head, head_info)
    (path / "state.json").write_text(json.dumps({"epoch": epoch, "history": history, "resumed_at_epochs": resumes},
                                                indent=2))


def _prefix_cache(cfg: Any, backbone: nn.Module, root: str | None = None) -> Any:
    """A frozen-prefix cache when LoRA sits on the top layers only and the config asks for it; kept on disk
    under ``root`` (per model, split and dtype) when given."""
    if not cfg.train.cache_frozen_prefix:
        return None
    from skr_ray.models.backbone import model_id
    from skr_ray.models.encoding import decoder_body
    from skr_ray.models.prefix_cache import FrozenPrefixCache, cache_directory, check_supported

    body = decoder_body(backbone)
    split = len(body.layers) - cfg.train.lora_layers
    check_supported(body, split)
    log.info("caching the states of the %d frozen lower layers; training runs the top %d", split, cfg.train.lora_layers)
    directory = cache_directory(root, model_id(cfg.model), split, cfg.model.dtype) if root else None
    return FrozenPrefixCache(split, directory)
