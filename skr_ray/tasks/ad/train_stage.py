"""`skr train` for AD: the SKR model (LoRA + classifier head), then the SFT baseline if it is evaluated."""

from __future__ import annotations

from typing import Any

from skr_ray.config import SKRConfig


def run_ad_training(cfg: SKRConfig) -> dict[str, Any]:
    from skr_ray.train.trainer import run_training

    out = {"skr": run_training(cfg, objective="head")}
    if "sft" in cfg.evaluate.systems:
        out["sft"] = run_training(cfg, objective="sft")
    return out
