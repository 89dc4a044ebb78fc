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

    @torch.inference_mode()
    def __call__(self, asks: Sequence[Ask]) -> list[str]:
        from skr_ray.models.vision import image_batch

        if not asks:
            return []
        crops = [self.pages[a.page_id].crop(a.crop) for a in asks]
        batch = image_batch(self.processor, crops, self.prompts(asks), self.device)
        tok = self.processor.tokenizer
        out = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False, temperature=None,
                                  top_p=None, top_k=None, pad_token_id=tok.pad_token_id)
        new = out[:, batch["input_ids"].shape[1]:]  # (B, T_new)
        return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
