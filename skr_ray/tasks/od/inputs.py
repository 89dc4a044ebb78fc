"""Model inputs of OD pages: the page image with the box prompt (``prompts.render_prompts``), as training,
the probe and the page reader feed it to the model."""

from __future__ import annotations

from typing import Any

import torch


def page_inputs(processor: Any, examples: list[dict], target: str, device: Any) -> dict[str, torch.Tensor]:
    """Model inputs of a batch of pages with the box prompt."""
    from skr_ray.models.vision import image_batch
    from skr_ray.pages import PageRef, load_page
    from skr_ray.tasks.od.prompts import render_prompts

    images = [load_page(PageRef(e["page_id"], e["path"], e.get("page", -1))) for e in examples]
    return image_batch(processor, images, render_prompts(processor, [target] * len(images)), device)
