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

from skr_ray.models.common import last_token_pool


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


IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_IMAGE_PIXELS = 40_000_000  # ~ a 6,300 x 6,300 page; more is refused from the header, before decoding


def decode_image(raw: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Any:
    """Encoded image bytes -> RGB PIL image. Only PNG, JPEG and WebP; the pixel count is checked from the header
    before any decoding, and a decompression bomb is refused; raises ValueError naming what failed."""
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=list(IMAGE_FORMATS))  # reads the header only
            width, height = image.size
            if width * height > max_pixels:
                raise ValueError(f"image has {width} x {height} = {width * height} pixels; the limit is {max_pixels}")
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"image refused as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ValueError(f"image could not be decoded as {', '.join(IMAGE_FORMATS)}") from None
    except OSError as exc:
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


def image_messages(text: str) -> list[dict]:
    """One user turn: the image, then ``text`` (nothing after the image when empty)."""
    content: list[dict] = [{"type": "image"}]
    if text:
        content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


def render_image_prompts(processor: Any, texts: list[str]) -> list[str]:
    return [processor.apply_chat_template(image_messages(t), tokenize=False, add_generation_prompt=True)
            for t in texts]


@torch.inference_mode()
def generate_on_images(model: torch.nn.Module, processor: Any, images: list[Any], prompts: list[str],
                       max_new_tokens: int, device: str | torch.device = "cpu") -> list[str]:
    """Greedy answers, one per (image, chat-rendered prompt), batched and left-padded."""
    if not images:
        return []
    batch = image_batch(processor, images, prompts, device)
    tok = processor.tokenizer
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                         top_k=None, pad_token_id=tok.pad_token_id)
    new = out[:, batch["input_ids"].shape[1]:]  # (B, T_new)
    return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]


# The image side of image retrieval: E5-V's image prompt (the one-word summary), or the image alone.
IMAGE_EMBED_PROMPTS = {"e5v": "Summarize above image in one word:", "plain": ""}


@torch.inference_mode()
def embed_images(model: torch.nn.Module, processor: Any, images: list[Any], head: torch.nn.Module | None = None,
                 device: str | torch.device = "cpu", prompt: str = "e5v") -> torch.Tensor:
    """(N, D) final-token states of images under an embedding prompt, through ``head`` when given."""
    batch = image_batch(processor, images, render_image_prompts(processor, [IMAGE_EMBED_PROMPTS[prompt]] * len(images)),
                        device)
    states = image_final_states(model, batch).float()
    return head(states) if head is not None else states
