"""The model as the strategies' asker: each ask's crop of its page and its question, batched generation.

Every call is a batch of crops from different pages (the driver fills it); greedy decoding, answers cut at
the end-of-turn marker. The prompt is the same chat turn for every backbone family (image, then text).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from skr_ray.tasks.od.prompts import build_messages
from skr_ray.tasks.od.search import Ask


class ModelAsker:
    def __init__(self, model: Any, processor: Any, model_id: str, max_new_tokens: int, target: str = "",
                 device: str | torch.device = "cpu") -> None:
        if not hasattr(processor, "image_processor"):
            raise ValueError("OD self-annotation with od.asker=model needs a vision-language model "
                             "(model.name_or_path: a folder whose config.json has a vision_config)")
        self.model, self.processor, self.model_id = model, processor, model_id
        self.max_new_tokens, self.target, self.device = max_new_tokens, target, device
        self.pages: dict[str, Any] = {}  # page id -> RGB image, set by whoever drives the search

    def prompts(self, asks: Sequence[Ask]) -> list[str]:
        return [self.processor.apply_chat_template(build_messages(self.target, a.kind), tokenize=False,
                                                   add_generation_prompt=True) for a in asks]

    def __call__(self, asks: Sequence[Ask]) -> list[str]:
        from skr_ray.models.vision import generate_on_images

        crops = [self.pages[a.page_id].crop(a.crop) for a in asks]
        return generate_on_images(self.model, self.processor, crops, self.prompts(asks), self.max_new_tokens, self.device)
