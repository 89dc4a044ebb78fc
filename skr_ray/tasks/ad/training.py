"""AD hooks for the shared re-expression loop: judged pairs, BCE on a classifier head (SKR) or
next-token cross-entropy on the yes/no answer token (SFT baseline)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from skr_ray.artifacts import Artifacts
from skr_ray.config import SKRConfig
from skr_ray.splits import split_by
from skr_ray.tasks.ad.head import head_options


def load_examples(cfg: SKRConfig, art: Artifacts) -> tuple[list[dict], list[dict]]:
    from skr_ray.tasks.ad.annotate import read_judgements

    rows = [r for r in read_judgements(art.labels_dir, quarantine=False) if r["status"] == "ok"]
    examples = [{"query": r["query"], "passage": r["passage"], "label": int(r["answer"]),
                 "query_id": r["query_id"], "kind": r.get("kind", "")} for r in rows]
    # split by the question's source passage: no leakage across sides
    return split_by(examples, lambda e: e["query_id"].split("#")[0], cfg.train.val_fraction, cfg.train.seed)


def resolve_pos_weight(cfg: SKRConfig, train: list[dict]) -> float:
    if cfg.ad.pos_weight > 0:
        return float(cfg.ad.pos_weight)
    pos = sum(e["label"] for e in train)
    neg = len(train) - pos
    return float(neg / pos) if pos and neg else 1.0


def head_info(cfg: SKRConfig, train: list[dict]) -> dict[str, Any]:
    from skr_ray.models.backbone import load_tokenizer, materialize
    from skr_ray.tasks.ad.prompts import IMAGE_PROMPT_VERSION, prompt_version

    pos = sum(e["label"] for e in train)
    return {
        "pooling": "last_token",
        "prompt": IMAGE_PROMPT_VERSION if cfg.data.modality == "image" else
        prompt_version(load_tokenizer(materialize(cfg.model))),
        "max_passage_tokens": cfg.ad.max_passage_tokens,
        "options": head_options(cfg),
        "pos_weight": resolve_pos_weight(cfg, train),
        "train_class_balance": {"yes": pos, "no": len(train) - pos},
        "threshold": 0.5,
        "layers": cfg.ad.head_layer,  # decoder layers the head reads through (0 = every layer)
    }


def build_head(backbone: Any, info: dict) -> torch.nn.Module:
    """SKR: the classifier head; SFT: the backbone's own LM head (answers are trained as tokens)."""
    if info.get("objective") == "sft":
        from skr_ray.tasks.ad.sft import LMHeadScorer

        return LMHeadScorer(backbone)
    from skr_ray.models.heads import make_classifier_head

    return make_classifier_head(backbone.config.get_text_config().hidden_size, info.get("options", {}))


def _forward(engine: Any, tokenizer: Any, chunk: list[dict], cfg: SKRConfig, device: Any) -> torch.Tensor:
    from skr_ray.tasks.ad.prompts import render_prompts

    if cfg.data.modality == "image":  # (question, image): the passage names the image, the processor reads it
        from skr_ray.models.vision import image_batch
        from skr_ray.pages import load_page
        from skr_ray.tasks.ad.prompts import render_image_prompts

        images = [load_page(e["passage"]) for e in chunk]
        batch = image_batch(tokenizer, images, render_image_prompts(tokenizer, [e["query"] for e in chunk]), device)
        return engine(**batch)

    prompts = render_prompts(tokenizer, [e["query"] for e in chunk], [e["passage"] for e in chunk],
                             cfg.ad.max_passage_tokens)
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    return engine(enc["input_ids"].to(device), enc["attention_mask"].to(device))


def _is_sft(engine: Any) -> bool:
    module = getattr(engine, "module", engine)
    return getattr(module.head, "objective", "head") == "sft"


def _loss(out: torch.Tensor, labels: torch.Tensor, engine: Any, tokenizer: Any, info: dict) -> torch.Tensor:
    from skr_ray.tasks.ad.loss import bce_loss

    if _is_sft(engine):
        from skr_ray.models.common import text_tokenizer
        from skr_ray.tasks.ad.sft import answer_token_ids

        yes, no = answer_token_ids(text_tokenizer(tokenizer))
        target = torch.where(labels > 0, torch.tensor(yes), torch.tensor(no)).to(out.device)
        return torch.nn.functional.cross_entropy(out, target)
    return bce_loss(out, labels.to(out.device), info.get("pos_weight", 1.0))


def batch_loss(engine: Any, tokenizer: Any, chunk: list[dict], cfg: SKRConfig, device: Any, info: dict) -> torch.Tensor:
    out = _forward(engine, tokenizer, chunk, cfg, device)
    return _loss(out, torch.tensor([e["label"] for e in chunk], dtype=torch.float32), engine, tokenizer, info)


def _scores(out: torch.Tensor, engine: Any, tokenizer: Any) -> torch.Tensor:
    if _is_sft(engine):
        from skr_ray.models.common import text_tokenizer
        from skr_ray.tasks.ad.sft import answer_token_ids

        yes, no = answer_token_ids(text_tokenizer(tokenizer))
        return torch.sigmoid(out[:, yes] - out[:, no])
    return torch.sigmoid(out)


@torch.no_grad()
def validate(engine: Any, tokenizer: Any, examples: list[dict], cfg: SKRConfig, device: Any, info: dict) -> dict[str, float]:
    """Validation loss, AUROC/AUPRC against the self-labels, and the accuracy-maximising threshold."""
    from skr_ray.tasks.ad.metrics import best_threshold, classification_metrics

    if not examples:
        return {}
    losses, scores = [], []
    for i in range(0, len(examples), cfg.train.batch_size):
        chunk = examples[i : i + cfg.train.batch_size]
        out = _forward(engine, tokenizer, chunk, cfg, device)
        labels = torch.tensor([e["label"] for e in chunk], dtype=torch.float32)
        losses.append(_loss(out, labels, engine, tokenizer, info).item() * len(chunk))
        scores.append(_scores(out, engine, tokenizer).float().cpu())
    y = np.asarray([e["label"] for e in examples])
    s = torch.cat(scores).numpy()
    threshold = best_threshold(y, s)
    m = classification_metrics(y, s, threshold)
    out = {"val_loss": float(sum(losses) / len(examples)), "threshold": threshold, "val_accuracy": m["accuracy"]}
    if m.get("auprc") is not None:
        out.update({"val_auroc": m["auroc"], "val_auprc": m["auprc"]})
    return out


def initial_head_state(cfg: SKRConfig, art: Artifacts, train: list[dict], val: list[dict],
                       info: dict) -> dict[str, torch.Tensor] | None:
    """SKR's starting head: None (random) or the probe fitted on frozen states (ad.head_init=probe)."""
    if info.get("objective") == "sft" or cfg.ad.head_init != "probe":
        return None
    from skr_ray.tasks.ad.probe import probe_head_state

    return probe_head_state(cfg, art, train, val, float(info["pos_weight"]))
