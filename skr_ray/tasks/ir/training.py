"""IR hooks for the shared re-expression loop: (question, passage) pairs and in-batch InfoNCE."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from skr_ray.artifacts import Artifacts
from skr_ray.config import SKRConfig
from skr_ray.tasks.ir.head import head_options


def load_examples(cfg: SKRConfig, art: Artifacts) -> tuple[list[dict], list[dict]]:
    """Training pairs of the chosen kinds, round-trip filtered, with BM25 hard negatives (as configured);
    the validation split keeps every usable pair of its documents, so recipes are compared on the same set."""
    from dataclasses import asdict as as_dict

    from skr_ray.artifacts import write_json
    from skr_ray.tasks.ir.mining import mine
    from skr_ray.tasks.ir.pairs import label_corpus, load_pairs, split_pairs

    t = cfg.train
    pairs = load_pairs(art.labels_dir, cfg.annotate.drop_duplicates)
    train, val = split_pairs(pairs, t.val_fraction, t.seed)
    if t.label_kinds:
        train = [p for p in train if p.kind in t.label_kinds]
    corpus = label_corpus(art.labels_dir) if (t.round_trip_k or t.hard_negatives) else {}
    negative_scores = None
    if t.mining_checkpoint and t.hard_negatives:  # re-mined once with a first-round SKR model
        from skr_ray.tasks.ir.mining import model_scores

        negative_scores = model_scores(cfg, t.mining_checkpoint, [p.query for p in train], corpus,
                                       art.train_dir / "mining_cache")
    mined, report = mine([asdict(p) for p in train], corpus, t.round_trip_k, t.hard_negatives, t.duplicate_threshold,
                         negative_scores=negative_scores)
    write_json(art.train_dir / "examples.json", {"train_before_filter": len(train), **as_dict(report),
                                                 "negatives_from": t.mining_checkpoint or "bm25",
                                                 "validation": len(val)})
    return mined, [asdict(p) for p in val]


def head_info(cfg: SKRConfig, train: list[dict]) -> dict[str, Any]:
    return {"pooling": cfg.train.pooling, "prompt": cfg.train.embed_prompt, "normalize": True,
            "options": head_options(cfg),
            "documents": cfg.data.modality}


@torch.no_grad()
def fit_start_head(model: Any, tokenizer: Any, train: list[dict], cfg: SKRConfig, device: Any,
                   info: dict) -> dict[str, torch.Tensor] | None:
    """SKR's starting projection (``train.head_init=probe``): the head-only recipe fitted on the states the model
    gives before any LoRA step (LoRA starts as the identity, so these are the frozen backbone's), or None.

    Runs inside the training worker, so with a frozen-prefix cache this pass is the one that fills it: the
    probe costs the top layers' forward over the training texts and a few seconds of head fitting."""
    if cfg.train.head_init != "probe" or cfg.data.modality != "text":
        return None
    import numpy as np

    from skr_ray.tasks.ir.probe import train_projection_head

    t = cfg.train
    head, model.head = model.head, torch.nn.Identity()  # raw pooled states, as the head will read them
    was_training = model.training
    model.eval()
    order = sorted(range(len(train)), key=lambda i: len(train[i]["passage"]))
    states = {"query": np.zeros((len(train), head.hidden_size), dtype=np.float32)}
    states["passage"] = np.zeros_like(states["query"])
    try:
        for i in range(0, len(order), t.batch_size):
            rows = order[i : i + t.batch_size]
            for field, max_length in (("query", t.max_query_length), ("passage", t.max_length)):
                states[field][rows] = embed(model, tokenizer, [train[r][field] for r in rows], max_length, device,
                                            t.embed_prompt, t.pooling).float().cpu().numpy()
    finally:
        model.head = head
        model.train(was_training)
    with torch.enable_grad():  # the projection head normalizes its input, as for head-only's normalized states
        fitted = train_projection_head(states["query"], states["passage"], cfg.evaluate.head_only_epochs,
                                       t.batch_size, t.temperature, seed=cfg.seed)
    return {k: v.to(device) for k, v in fitted.state_dict().items()}


def embed(engine: Any, tokenizer: Any, texts: list[str], max_length: int, device: Any, prompt: str,
          pooling: str = "last_token") -> torch.Tensor:
    from skr_ray.models.common import text_tokenizer
    from skr_ray.models.encoding import format_for_embedding

    batch = format_for_embedding(text_tokenizer(tokenizer), texts, max_length, prompt, pooling)
    extra = {"pool_mask": batch["pool_mask"].to(device)} if "pool_mask" in batch else {}
    return engine(batch["input_ids"].to(device), batch["attention_mask"].to(device), **extra)


def embed_images(engine: Any, processor: Any, refs: list[str], device: Any, prompt: str) -> torch.Tensor:
    """Image documents (data.modality=image): each image under the image embedding prompt."""
    from skr_ray.models.vision import IMAGE_EMBED_PROMPTS, image_batch, render_image_prompts
    from skr_ray.pages import load_page

    images = [load_page(r) for r in refs]
    batch = image_batch(processor, images, render_image_prompts(processor, [IMAGE_EMBED_PROMPTS[prompt]] * len(refs)),
                        device)
    return engine(**batch)


def embed_documents(engine: Any, tokenizer: Any, docs: list[str], cfg: SKRConfig, device: Any) -> torch.Tensor:
    t = cfg.train
    if cfg.data.modality == "image":
        return embed_images(engine, tokenizer, docs, device, t.embed_prompt)
    return embed(engine, tokenizer, docs, t.max_length, device, t.embed_prompt, t.pooling)


def batch_loss(engine: Any, tokenizer: Any, chunk: list[dict], cfg: SKRConfig, device: Any, info: dict) -> torch.Tensor:
    from skr_ray.tasks.ir.loss import contrastive_loss

    t = cfg.train
    q = embed(engine, tokenizer, [p["query"] for p in chunk], t.max_query_length, device, t.embed_prompt, t.pooling)
    p = embed_documents(engine, tokenizer, [p["passage"] for p in chunk], cfg, device)
    negatives = [n for pair in chunk for n in pair.get("negatives", [])]
    negative_ids = [i for pair in chunk for i in pair.get("negative_ids", [])]
    n = embed_documents(engine, tokenizer, negatives, cfg, device) if negatives else None
    # several queries per passage: a batch-mate's copy of a query's own passage is not a negative
    return contrastive_loss(q, p, t.temperature, negatives=n, docs=doc_keys([x["doc_id"] for x in chunk], device),
                            negative_docs=doc_keys(negative_ids, device) if negatives else None)


def doc_keys(doc_ids: list[str], device: Any) -> torch.Tensor:
    """(N,) int64 keys of doc ids, equal exactly when the ids are (for masking across workers)."""
    import hashlib

    return torch.tensor([int.from_bytes(hashlib.sha1(d.encode()).digest()[:7], "big") for d in doc_ids],
                        dtype=torch.long, device=device)


@torch.no_grad()
def validate(engine: Any, tokenizer: Any, pairs: list[dict], cfg: SKRConfig, device: Any, info: dict) -> dict[str, float]:
    """Validation loss (in-batch, as in training) and R@1 of each question among all val passages."""
    from skr_ray.tasks.ir.loss import info_nce

    if len(pairs) < 2:
        return {}
    t = cfg.train
    qs, ps = [], []
    for i in range(0, len(pairs), t.batch_size):
        chunk = pairs[i : i + t.batch_size]
        qs.append(embed(engine, tokenizer, [p["query"] for p in chunk], t.max_query_length, device, t.embed_prompt, t.pooling))
        ps.append(embed_documents(engine, tokenizer, [p["passage"] for p in chunk], cfg, device))
    q, p = torch.cat(qs).float(), torch.cat(ps).float()
    losses = [
        info_nce(q[i : i + t.batch_size], p[i : i + t.batch_size], t.temperature).item()
        for i in range(0, len(q), t.batch_size)
        if len(q[i : i + t.batch_size]) > 1
    ]
    top1 = (q @ p.T).argmax(dim=1).cpu().tolist()
    # several queries per passage: a hit on another copy of the query's own passage is a hit
    docs = [pair["doc_id"] for pair in pairs]
    r1 = sum(docs[j] == docs[i] for i, j in enumerate(top1)) / len(pairs)
    return {"val_loss": float(sum(losses) / max(1, len(losses))), "val_recall@1": r1}
