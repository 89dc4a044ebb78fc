"""Which SKR checkpoints a Serve application offers, under which model ids, on which base models.

Checkpoints are grouped by the base model they were trained on: one backbone deployment per base model
serves all of that model's adapters (an IR and an AD adapter of SmolLM2 share a replica; an OD adapter
of a vision-language model gets its own backbone).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skr_ray.artifacts import SUCCESS
from skr_ray.config import ModelConfig, load_config
from skr_ray.models.checkpoint import HEAD_CONFIG, RUN_CONFIG, find_checkpoint, head_layers
from skr_ray.models.vision import is_vision_model


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
    backbone: str = "backbone-0"
    """Which backbone deployment serves it (one per base model)."""
    vision: bool = False
    """Its base model reads images (a vision-language model)."""
    index: str = ""
    """IR: the folder of the corpus index ``skr index`` built for it (served from a run folder that has one);
    ``POST /v1/search`` searches it."""

    def describe(self) -> dict[str, Any]:
        # no server path: a client learns what the model does, not where it lives
        return {"id": self.id, "object": "model", "owned_by": "skr_ray", "task": self.task,
                "objective": self.objective, "input": "image" if self.vision else "text", "search": bool(self.index)}


def _resolve_checkpoint(path: Path) -> Path:
    try:
        return find_checkpoint(path)
    except FileNotFoundError as exc:
        raise RegistryError(str(exc)) from None


def build_registry(models: dict[str, str]) -> tuple[dict[str, ModelEntry], dict[str, ModelConfig]]:
    """{model id: checkpoint or run folder} -> entries + {backbone key: base-model config}.

    Backbone keys are ``backbone-0``, ``backbone-1``, ... in the order base models first appear.
    """
    if not models:
        raise RegistryError("no models to serve: pass models as {id: checkpoint_or_run_dir}")
    entries: dict[str, ModelEntry] = {}
    bases: dict[str, ModelConfig] = {}
    keys: dict[tuple, str] = {}
    for model_id, raw in models.items():
        folder = Path(raw).expanduser().resolve()
        ckpt = _resolve_checkpoint(folder)
        index = folder / "index"  # a run folder whose index stage finished (artifacts.Artifacts.index_dir)
        info = json.loads((ckpt / HEAD_CONFIG).read_text())
        cfg = load_config(ckpt / RUN_CONFIG)
        # A head that reads an inner layer runs a cut decoder: a backbone of its own (ad.head_layer).
        identity = (cfg.model.name_or_path, cfg.model.gguf_file, cfg.model.dtype, head_layers(info))
        if identity not in keys:
            keys[identity] = f"backbone-{len(keys)}"
            bases[keys[identity]] = cfg.model
        entries[model_id] = ModelEntry(
            id=model_id, checkpoint=str(ckpt), task=info["task"], objective=info.get("objective", "head"),
            head_info=info, max_length=cfg.evaluate.max_length, backbone=keys[identity],
            vision=is_vision_model(Path(cfg.model.name_or_path).expanduser()),
            index=str(index) if ckpt != folder and (index / SUCCESS).is_file() else "",
        )
    return entries, bases
