"""Vision-language backbones (Gemma-3, LLaVA-1.6, Qwen2-VL, ... through transformers' Auto classes).

A page image and a chat prompt go in; the final token's last-layer state comes out, exactly as for the
text backbones, so the same heads and checkpoints apply. ``load_backbone`` routes here when the model
folder's config has a ``vision_config``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from skr_ray.models.encoding import last_token_pool


def is_vision_model(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    return config.is_file() and "vision_config" in json.loads(config.read_text())


def load_vision_model(path: str | Path, dtype: torch.dtype, device: str | torch.device) -> tuple[Any, Any]:
    """(model, processor) in eval mode; the processor's tokenizer pads on the left."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=dtype)
    processor = AutoProcessor.from_pretrained(str(path))
    tokenizer = processor.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # last-token pooling and batched generation both want left padding
    if model.config.get_text_config().pad_token_id is None:
        model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), processor


def vision_body(model: torch.nn.Module) -> torch.nn.Module:
    """The multimodal transformer without the LM head (through PEFT and DeepSpeed wrappers)."""
    inner = getattr(model, "module", model)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return inner.model


def decode_image(raw: bytes) -> Any:
    """Encoded image bytes (PNG, JPEG, ...) -> RGB PIL image; raises ValueError naming what failed."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"image could not be decoded: {exc}") from None
    return image.convert("RGB")


def image_batch(processor: Any, images: list[Any], prompts: list[str], device: str | torch.device = "cpu") -> dict:
    """One image per prompt, left-padded, as model inputs on ``device``."""
    batch = processor(text=prompts, images=[[im] for im in images], return_tensors="pt", padding=True)
    return {k: v.to(device) for k, v in batch.items()}


def image_final_states(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, D) final-token hidden states of the last layer, for image + text inputs."""
    out = vision_body(model)(**batch, use_cache=False)
    return last_token_pool(out.last_hidden_state, batch["attention_mask"])
