"""IR's head: the final-token (or mean) state, L2-normalized; with ``train.head_init=probe`` a linear projection
in front, started from the head-only fit (``skr_ray.tasks.ir.probe``)."""

from __future__ import annotations

from typing import Any

from skr_ray.config import SKRConfig
from skr_ray.models.heads import EmbeddingHead, make_embedding_head

__all__ = ["EmbeddingHead", "head_options", "make_head"]

make_head = make_embedding_head


def head_options(cfg: SKRConfig) -> dict[str, Any]:
    return {"projection": True} if cfg.train.head_init == "probe" else {}
