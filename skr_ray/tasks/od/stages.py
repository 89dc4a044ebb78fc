"""The OD pipeline stages that do not exist yet: each says so instead of running another task's stage."""

from __future__ import annotations

from skr_ray.config import SKRConfig


class StageNotBuilt(NotImplementedError):
    pass


def not_built(cfg: SKRConfig) -> dict:
    raise StageNotBuilt(
        "task=od: self-annotation (direct ask, fuzzy-localization crop search, OCR anchors), training and "
        "evaluation are not built yet. OD checkpoints (adapter/ + box head) can be served: see README, Serve."
    )
