"""AD's head: an MLP on the final-token state (standardized first by default) -> one logit, answerable or not."""

from __future__ import annotations

from typing import Any

from skr_ray.config import SKRConfig
from skr_ray.models.heads import ClassifierHead, make_classifier_head

__all__ = ["ClassifierHead", "head_options", "make_head"]

make_head = make_classifier_head


def head_options(cfg: SKRConfig) -> dict[str, Any]:
    return {"hidden": cfg.ad.head_hidden, "input_norm": cfg.ad.head_input_norm}
