"""Which SKR checkpoints a Serve application offers, under which model ids.

All checkpoints must share one base model: a single backbone replica serves every adapter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skr_ray.config import ModelConfig, load_config
from skr_ray.models.checkpoint import ADAPTER, HEAD_CONFIG, RUN_CONFIG


class RegistryError(ValueError):
    pass


@dataclass(frozen=True)
class ModelEntry:
    id: str
    checkpoint: str
    task: str  # ir | ad | od
    objective: str
    head_info: dict[str, Any] = field(hash=False, compare=False)
    max_length: int = 256
    """IR: tokens per text (the length the model was evaluated at)."""

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "object": "model", "owned_by": "skr_ray", "task": self.task,
                "checkpoint": self.checkpoint}


def _resolve_checkpoint(path: Path) -> Path:
    for candidate in (path, path / "train" / "checkpoint"):
        if (candidate / ADAPTER).is_dir() and (candidate / HEAD_CONFIG).is_file():
            return candidate
    raise RegistryError(f"{path} is neither an SKR checkpoint (adapter/ + head.json) nor a run folder holding one")


def build_registry(models: dict[str, str]) -> tuple[dict[str, ModelEntry], ModelConfig]:
    """{model id: checkpoint or run folder} -> entries + the shared base-model config."""
    if not models:
        raise RegistryError("no models to serve: pass models as {id: checkpoint_or_run_dir}")
    entries: dict[str, ModelEntry] = {}
    base: ModelConfig | None = None
    base_from = ""
    for model_id, raw in models.items():
        ckpt = _resolve_checkpoint(Path(raw).expanduser().resolve())
        info = json.loads((ckpt / HEAD_CONFIG).read_text())
        cfg = load_config(ckpt / RUN_CONFIG)
        if base is None:
            base, base_from = cfg.model, model_id
        elif cfg.model.name_or_path != base.name_or_path:
            raise RegistryError(
                f"model {model_id!r} was trained on {cfg.model.name_or_path!r} but {base_from!r} on "
                f"{base.name_or_path!r}; one application serves adapters of one base model"
            )
        entries[model_id] = ModelEntry(
            id=model_id, checkpoint=str(ckpt), task=info["task"], objective=info.get("objective", "head"),
            head_info=info, max_length=cfg.evaluate.max_length,
        )
    assert base is not None
    return entries, base
