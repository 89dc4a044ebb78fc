"""Build the DeepSpeed config from the typed training config."""

from __future__ import annotations

from typing import Any

import torch

from skr_ray.config import TrainConfig

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
GRADIENT_CLIPPING = 1.0
"""Max global gradient norm per step."""


def uses_torch_optimizer(cfg: TrainConfig, use_gpu: bool) -> bool:
    """On CPU without optimizer offload, torch's AdamW steps the (LoRA-sized) trainable states: DeepSpeed's own
    CPU Adam is a C++ op JIT-compiled on first use (about a minute of g++ on 2 cores, on every fresh machine)."""
    return not use_gpu and not cfg.offload_optimizer


def torch_optimizer(cfg: TrainConfig, use_gpu: bool, params: list) -> torch.optim.Optimizer | None:
    """The client optimizer to hand ``deepspeed.initialize`` (None: the config's ``optimizer`` section builds it)."""
    if not uses_torch_optimizer(cfg, use_gpu):
        return None
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=ADAM_BETAS, eps=ADAM_EPS)


def build_deepspeed_config(cfg: TrainConfig, world_size: int, use_gpu: bool, bf16: bool) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.zero_stage == 3:
        # Keep the frozen backbone gathered for forward passes of LoRA-only training.
        zero.update({"stage3_gather_16bit_weights_on_model_save": True})
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": bool(use_gpu)}
    if cfg.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": bool(use_gpu)}
    config = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "train_batch_size": cfg.batch_size * world_size * cfg.gradient_accumulation_steps,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "betas": list(ADAM_BETAS), "eps": ADAM_EPS},
        },
        "gradient_clipping": GRADIENT_CLIPPING,
        "zero_optimization": zero,
        "bf16": {"enabled": bool(use_gpu and bf16)},
        "steps_per_print": 1_000_000_000,
        "wall_clock_breakdown": False,
    }
    if uses_torch_optimizer(cfg, use_gpu):
        del config["optimizer"]
    return config


def prebuild_ops() -> list[str]:
    """JIT-compile, now, the DeepSpeed C++ ops a CPU training run builds on first use (the shared-memory
    all-reduce; about 40 s of g++ on 2 cores), so that cost lands in ``make install`` rather than in the first
    job. Cached under ``~/.cache/torch_extensions``; on GPU machines there is nothing to build."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    built = []
    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")  # what deepspeed.comm builds on CPU
    if builder is not None and deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        builder.load(verbose=False)
        built.append(builder.absolute_name())
    return built


if __name__ == "__main__":
    print("DeepSpeed ops ready:", ", ".join(prebuild_ops()) or "none needed")
