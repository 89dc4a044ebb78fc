"""OD hooks for the shared re-expression loop: (page image, self-labelled box) -> box head, L1 loss.

The input is the page image with the same box prompt base NTP answers (``prompts.render_prompts``); the head
reads the final-token state. Pages are decoded from disk per batch (workers share the file system).
"""

from __future__ import annotations

from typing import Any

import torch

from skr_ray.artifacts import Artifacts
from skr_ray.config import SKRConfig
from skr_ray.splits import split_by
from skr_ray.tasks.od.head import head_options
from skr_ray.tasks.od.inputs import page_inputs


def load_examples(cfg: SKRConfig, art: Artifacts) -> tuple[list[dict], list[dict]]:
    """Usable page labels, split by page: the validation pages are never trained on."""
    from skr_ray.tasks.od.annotate import read_page_labels

    rows = [r for r in read_page_labels(art.labels_dir, quarantine=False) if r["status"] == "ok"]
    examples = [{"page_id": r["page_id"], "path": r["image"], "page": int(r["page"]),
                 "box": [float(v) for v in r["box"]]} for r in rows]
    return split_by(examples, lambda e: e["page_id"], cfg.train.val_fraction, cfg.train.seed)


def head_info(cfg: SKRConfig, train: list[dict]) -> dict[str, Any]:
    from skr_ray.tasks.od.prompts import PROMPT_VERSION

    return {"pooling": "last_token", "prompt": PROMPT_VERSION, "target": cfg.od.target,
            "options": head_options(cfg)}


class AnswerAsText(torch.nn.Module):
    """The SFT baseline's 'head': none. LoRA learns to *write* the box (next-token loss on its text)."""

    objective = "sft"


def build_head(backbone: Any, info: dict) -> torch.nn.Module:
    if info.get("objective") == "sft":
        return AnswerAsText()
    from skr_ray.models.heads import make_box_head

    return make_box_head(backbone.config.get_text_config().hidden_size, info.get("options", {}))


def box_text(box: list[float]) -> str:
    """How the SFT baseline learns to write a box: the direct prompt's own answer format."""
    return "[" + ", ".join(f"{v:.3f}" for v in box) + "]"


def sft_inputs(processor: Any, examples: list[dict], target: str, device: Any) -> dict[str, torch.Tensor]:
    """Page + box prompt + the box as text; labels are the answer's tokens (and end of turn), -100 elsewhere."""
    from skr_ray.models.vision import image_batch
    from skr_ray.pages import PageRef, load_page
    from skr_ray.tasks.od.prompts import render_prompts

    tok = processor.tokenizer
    answers = [box_text(e["box"]) + tok.eos_token for e in examples]
    images = [load_page(PageRef(e["page_id"], e["path"], e.get("page", -1))) for e in examples]
    prompts = [p + a for p, a in zip(render_prompts(processor, [target] * len(examples)), answers)]
    batch = image_batch(processor, images, prompts, device)
    labels = torch.full_like(batch["input_ids"], -100)
    for i, answer in enumerate(answers):
        n = len(tok(answer, add_special_tokens=False)["input_ids"])
        labels[i, -n:] = batch["input_ids"][i, -n:]  # left padding: the answer ends every row
    batch["labels"] = labels
    return batch


def batch_loss(engine: Any, processor: Any, chunk: list[dict], cfg: SKRConfig, device: Any, info: dict) -> torch.Tensor:
    from skr_ray.tasks.od.loss import box_l1_loss

    if info.get("objective") == "sft":
        return engine(**sft_inputs(processor, chunk, cfg.od.target, device))
    pred = engine(**page_inputs(processor, chunk, cfg.od.target, device))  # (B, 4)
    return box_l1_loss(pred, torch.tensor([e["box"] for e in chunk], device=pred.device))


@torch.no_grad()
def validate(engine: Any, processor: Any, examples: list[dict], cfg: SKRConfig, device: Any, info: dict) -> dict[str, float]:
    """L1 loss and mean IoU against the self-labelled boxes of the validation pages."""
    from skr_ray.tasks.od.boxes import iou
    from skr_ray.tasks.od.loss import box_l1_loss

    if not examples:
        return {}
    sft = info.get("objective") == "sft"  # its loss: next-token loss on the held-out pages' box texts
    losses, ious = [], []
    for i in range(0, len(examples), cfg.train.batch_size):
        chunk = examples[i : i + cfg.train.batch_size]
        if sft:
            losses.append(batch_loss(engine, processor, chunk, cfg, device, info).item() * len(chunk))
            continue
        pred = engine(**page_inputs(processor, chunk, cfg.od.target, device)).float().cpu()
        target = torch.tensor([e["box"] for e in chunk])
        losses.append(box_l1_loss(pred, target).item() * len(chunk))
        ious += [iou(p.tolist(), t.tolist()) for p, t in zip(pred, target)]
    out = {"val_loss": sum(losses) / len(examples)}
    if ious:
        out["val_mean_iou"] = sum(ious) / len(ious)
    return out


def initial_head_state(cfg: SKRConfig, art: Artifacts, train: list[dict], val: list[dict],
                       info: dict) -> dict[str, torch.Tensor] | None:
    """od.head_init=probe: the box head fitted on frozen base states of the same self-labelled pages."""
    if info.get("objective") == "sft" or cfg.od.head_init != "probe":
        return None
    from skr_ray.tasks.od.probe import probe_head_state

    return probe_head_state(cfg, art, train, val)
