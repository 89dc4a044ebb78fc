"""Re-expression training throughput: Ray Train + DeepSpeed vs a plain PyTorch loop.

Same self-labelled examples in the same batches, same model, LoRA, loss, batch size and sequence lengths (the
plain loop runs each batch as one padded pass, as one writes it by hand; the Ray Train loop as configured,
``train.group_by_length`` included); prints samples/s of
each (steady state, first step excluded in both) and their ratio, and Ray Train's start-up separately
(worker group, model load, DeepSpeed init, checkpoint export: everything outside the steps).

    python benchmarks/train_throughput.py --labels RUN_DIR [--steps 50] [key=value overrides]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import torch


def plain_loop(cfg, examples: list[dict], head_info: dict, steps: int) -> float:
    """The loop a user would write by hand: the same model, loss code, batches (same seeded permutation as the
    Ray Train loop's first epoch), AdamW and gradient clipping, in this process, without Ray or DeepSpeed."""
    import random

    from skr_ray.models.backbone import load_backbone
    from skr_ray.models.checkpoint import add_lora
    from skr_ray.tasks import get_task
    from skr_ray.train.deepspeed_config import ADAM_BETAS, ADAM_EPS, GRADIENT_CLIPPING
    from skr_ray.train.loop import ReexpressionModel, _prefix_cache

    task = get_task(cfg.task)
    hooks = task.training_hooks()
    torch.manual_seed(cfg.train.seed)
    backbone, tok = load_backbone(cfg.model)
    if cfg.train.gradient_checkpointing:  # same memory/compute trade-off as the Ray Train loop
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    backbone = add_lora(backbone, cfg.train)
    head = task.make_head(backbone.config.get_text_config().hidden_size, head_info.get("options", {}))
    model = ReexpressionModel(backbone, head, _prefix_cache(cfg, backbone))  # one padded pass per batch
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, betas=ADAM_BETAS,
                            eps=ADAM_EPS)
    order = list(range(len(examples)))
    random.Random(cfg.train.seed * 1000).shuffle(order)  # epoch 0's permutation in the Ray Train loop
    bs = cfg.train.batch_size
    times = []
    for step in range(steps):
        chunk = [examples[i] for i in order[step * bs : (step + 1) * bs]]
        t0 = time.perf_counter()
        loss = hooks.batch_loss(model, tok, chunk, cfg, "cpu", head_info)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, GRADIENT_CLIPPING)
        opt.step()
        loss.item()
        times.append(time.perf_counter() - t0)
    return bs * (steps - 1) / sum(times[1:])


def main() -> None:
    from skr_ray.artifacts import Artifacts
    from skr_ray.config import load_config
    from skr_ray.tasks import get_task
    from skr_ray.train.trainer import run_training

    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", required=True, help="a run dir with a finished annotate/ stage")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(tempfile.mkdtemp(prefix="skr-bench-train-"))
    shutil.copytree(Path(args.labels) / "annotate", out / "annotate")
    cfg = load_config(None, [f"output_dir={out}", "train.epochs=1", f"train.max_steps_per_epoch={args.steps}",
                             "train.val_fraction=0.0", *args.overrides])
    hooks = get_task(cfg.task).training_hooks()
    pairs, _ = hooks.load_examples(cfg, Artifacts(out))
    if len(pairs) < args.steps * cfg.train.batch_size:
        parser.error(f"{len(pairs)} training pairs give fewer than {args.steps} steps of {cfg.train.batch_size}")
    plain = plain_loop(cfg, pairs, hooks.head_info(cfg, pairs), args.steps)
    info = run_training(cfg)
    final = info["final"]
    ray_sps = final.get("steady_samples_per_s", final["samples_per_s"])
    import os

    print(f"cores={os.cpu_count()} pairs={len(pairs)} batch_size={cfg.train.batch_size} steps={args.steps} "
          f"zero_stage={cfg.train.zero_stage} lora_layers={cfg.train.lora_layers or 'all'} "
          f"max_length={cfg.train.max_length} group_by_length={cfg.train.group_by_length} (Ray Train path; the plain "
          "loop runs one padded pass per batch)")
    print(f"plain PyTorch loop      : {plain:.3f} samples/s (first step excluded)")
    print(f"Ray Train + DeepSpeed   : {ray_sps:.3f} samples/s (first step excluded)")
    print(f"ratio ray+ds/plain      : {ray_sps / plain:.2f}")
    print(f"Ray Train start-up      : {info['seconds'] - final['epoch_seconds']:.1f} s outside the steps "
          f"(worker group, model load, DeepSpeed init, validation, checkpoints); {info['seconds']:.1f} s end to end")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
