"""Re-expression training throughput: Ray Train + DeepSpeed vs a plain PyTorch loop.

Same self-labelled pairs, same model, LoRA, batch size and sequence lengths; prints samples/s of
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


def plain_loop(cfg, pairs, steps: int) -> float:
    from skr_ray.models.backbone import load_backbone
    from skr_ray.models.checkpoint import add_lora
    from skr_ray.models.encoding import final_token_states, format_for_embedding
    from skr_ray.tasks.ir.head import EmbeddingHead
    from skr_ray.tasks.ir.loss import info_nce

    model, tok = load_backbone(cfg.model)
    if cfg.train.gradient_checkpointing:  # same memory/compute trade-off as the Ray Train loop
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = add_lora(model, cfg.train)
    model.train()
    head = EmbeddingHead(model.config.hidden_size)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
    bs = cfg.train.batch_size
    times = []
    for step in range(steps + 1):
        chunk = pairs[(step * bs) % len(pairs) :][:bs]
        t0 = time.perf_counter()
        q = format_for_embedding(tok, [p.query for p in chunk], cfg.train.max_query_length, cfg.train.embed_prompt)
        d = format_for_embedding(tok, [p.passage for p in chunk], cfg.train.max_length, cfg.train.embed_prompt)
        loss = info_nce(head(final_token_states(model, q)), head(final_token_states(model, d)), cfg.train.temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return bs * steps / sum(times[1:])


def main() -> None:
    from skr_ray.artifacts import Artifacts
    from skr_ray.config import load_config
    from skr_ray.tasks.ir.pairs import load_pairs
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
    pairs = load_pairs(Artifacts(out).labels_dir)
    plain = plain_loop(cfg, pairs, args.steps)
    info = run_training(cfg)
    final = info["final"]
    ray_sps = final.get("steady_samples_per_s", final["samples_per_s"])
    import os

    print(f"cores={os.cpu_count()} pairs={len(pairs)} batch_size={cfg.train.batch_size} steps={args.steps} "
          f"zero_stage={cfg.train.zero_stage} lora_layers={cfg.train.lora_layers or 'all'} "
          f"max_length={cfg.train.max_length}")
    print(f"plain PyTorch loop      : {plain:.3f} samples/s (first step excluded)")
    print(f"Ray Train + DeepSpeed   : {ray_sps:.3f} samples/s (first step excluded)")
    print(f"ratio ray+ds/plain      : {ray_sps / plain:.2f}")
    print(f"Ray Train start-up      : {info['seconds'] - final['epoch_seconds']:.1f} s outside the steps "
          f"(worker group, model load, DeepSpeed init, validation, checkpoints); {info['seconds']:.1f} s end to end")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
