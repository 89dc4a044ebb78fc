"""SKR checkpoints: PEFT adapter dir + head weights + head/pooling config + resolved run config.

Loadable without Ray: ``load_skr_model(path)`` rebuilds backbone + adapter + head from the folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from skr_ray.artifacts import ADAPTER
from skr_ray.config import SKRConfig, TrainConfig, load_config
from skr_ray.models.backbone import load_backbone
from skr_ray.models.heads import make_task_head

HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "head.json"
RUN_CONFIG = "config.yaml"


def add_lora(model: PreTrainedModel, cfg: TrainConfig) -> PeftModel:
    """LoRA on the attention projections; everything else frozen."""
    layers = None
    n_layers = getattr(model.config, "num_hidden_layers", None)
    if cfg.lora_layers and n_layers and cfg.lora_layers < n_layers:
        layers = list(range(n_layers - cfg.lora_layers, n_layers))
    lora = LoraConfig(
        layers_to_transform=layers,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
    )
    return get_peft_model(model, lora)


def save_head(directory: Path, head: torch.nn.Module, head_info: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    if state:
        save_file(state, str(directory / HEAD_WEIGHTS))
    (directory / HEAD_CONFIG).write_text(json.dumps(head_info, indent=2) + "\n")


@dataclass
class SKRModel:
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    head: torch.nn.Module
    head_info: dict[str, Any]
    config: SKRConfig


def head_layers(head_info: dict[str, Any]) -> int:
    """Decoder layers a checkpoint's head reads (0 = every layer); answer-as-text (SFT) models keep them all."""
    return 0 if head_info.get("objective", "head") == "sft" else int(head_info.get("layers", 0) or 0)


def load_skr_model(checkpoint_dir: str | Path, device: str | torch.device = "cpu") -> SKRModel:
    """Backbone + LoRA adapter + head from an SKR checkpoint folder."""
    root = Path(checkpoint_dir)
    if not (root / ADAPTER).is_dir() or not (root / HEAD_CONFIG).is_file():
        raise FileNotFoundError(f"{root} is not an SKR checkpoint (needs {ADAPTER}/ and {HEAD_CONFIG})")
    cfg = load_config(root / RUN_CONFIG)
    head_info = json.loads((root / HEAD_CONFIG).read_text())
    base, tokenizer = load_backbone(cfg.model, device=device, layers=head_layers(head_info))
    model = PeftModel.from_pretrained(base, str(root / ADAPTER))
    model.eval()
    if head_info.get("objective", "head") == "sft":  # answers through the LM head: no task head
        head: torch.nn.Module = torch.nn.Identity()
    else:
        head = make_task_head(head_info["task"], head_info["hidden_size"], head_info.get("options", {}))
    if (root / HEAD_WEIGHTS).is_file():
        head.load_state_dict(load_file(str(root / HEAD_WEIGHTS)))
    head.to(device).eval()
    return SKRModel(model, tokenizer, head, head_info, cfg)


def find_checkpoint(path: str | Path) -> Path:
    """``path`` itself when it is an SKR checkpoint (adapter/ + head.json), else the one a run folder holds
    (train/checkpoint); FileNotFoundError when neither."""
    path = Path(path)
    for candidate in (path, path / "train" / "checkpoint"):
        if (candidate / ADAPTER).is_dir() and (candidate / HEAD_CONFIG).is_file():
            return candidate
    raise FileNotFoundError(f"{path} is neither an SKR checkpoint (adapter/ + head.json) nor a run folder holding one")


def checkpoint_stamp(path: str | Path) -> str:
    """A key that changes whenever the checkpoint's weights or configs do (retraining in place included):
    each weight/config file's relative name, size and modification time."""
    import hashlib

    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json", ".bin"))
    parts = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
