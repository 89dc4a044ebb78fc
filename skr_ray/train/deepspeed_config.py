"""Build the DeepSpeed config from the typed training config."""

from __future__ import annotations

from typing import Any

from skr_ray.config import TrainConfig


def build_deepspeed_config(cfg: TrainConfig, world_size: int, use_gpu: bool, bf16: bool) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.zero_stage == 3:
        # Keep the frozen backbone gathered for forward passes of LoRA-only training.
        zero.update({"stage3_gather_16bit_weights_on_model_save": True})
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": bool(use_gpu)}
    if cfg.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": bool(use_gpu)}
    return {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "train_batch_size": cfg.batch_size * world_size * cfg.gradient_accumulation_steps,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "betas": [0.9, 0.999], "eps": 1e-8},
        },
        "gradient_clipping": 1.0,
        "zero_optimization": zero,
        "bf16": {"enabled": bool(use_gpu and bf16)},
        "steps_per_print": 1_000_000_000,
        "wall_clock_breakdown": False,
    }
