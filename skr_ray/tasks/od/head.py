"""OD's head: an MLP on the final-token state of the page prompt -> a normalized box (x0, y0, x1, y1)."""

from __future__ import annotations

from typing import Any

from skr_ray.config import SKRConfig
from skr_ray.models.heads import BoxHead, make_box_head

__all__ = ["BoxHead", "head_options", "make_head"]

make_head = make_box_head


def head_options(cfg: SKRConfig) -> dict[str, Any]:
    return {"hidden": cfg.od.head_hidden, "input_norm": cfg.od.head_input_norm}
