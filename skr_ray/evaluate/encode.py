"""Encode texts into embeddings on Ray Data: an actor pool of encoders, one per model replica.

An encoder is described by an :class:`EncoderSpec` (which weights, which prompt, which head), so
base, E5-V-style, SKR and head-only systems share one code path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skr_ray.config import SKRConfig, from_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    checkpoint: str | None = None
    """SKR checkpoint folder (adapter + head); None = the untouched base model."""
    prompt: str = "plain"
    """plain: text + EOS; e5v: chat prompt asking for a one-word summary, last token read."""
    pooling: str = "last_token"
    """last_token, mean or echo (models.encoding.POOLINGS): as the checkpoint was trained."""


class TextEncoder:
    """Ray Data UDF: loads the encoder in __init__, embeds a batch of texts in __call__."""

    def __init__(self, cfg_dict: dict[str, Any], spec: dict[str, Any], replicas: int,
                 prefix_cache_dir: str | None = None) -> None:
        import torch

        from skr_ray.models.backbone import load_backbone, set_threads

        self.cfg = from_dict(cfg_dict)
        self.spec = EncoderSpec(**spec)
        set_threads(self.cfg.model, replicas)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.head = None
        self.prefix = None
        if self.spec.checkpoint:
            from skr_ray.models.checkpoint import load_skr_model

            skr = load_skr_model(self.spec.checkpoint, device=self.device)
            self.model = skr.model.merge_and_unload()  # plain weights: same outputs, faster forward
            self.prefix = _training_prefix_cache(self.cfg, self.spec.checkpoint, self.model, prefix_cache_dir)
            self.tokenizer, self.head = skr.tokenizer, skr.head
        else:
            self.model, self.tokenizer = load_backbone(self.cfg.model, device=self.device)
            self.prefix = _base_prefix_cache(self.cfg, self.model, prefix_cache_dir)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F

        from skr_ray.models.encoding import embed_texts
        from skr_ray.models.vision import embed_images
        from skr_ray.tasks.od.pages import load_page

        texts = [str(t) for t in batch["text"]]
        is_image = [bool(x) for x in batch["image"]] if "image" in batch else [False] * len(texts)
        out: list[torch.Tensor | None] = [None] * len(texts)
        for image, rows in ((False, [i for i, f in enumerate(is_image) if not f]),
                            (True, [i for i, f in enumerate(is_image) if f])):
            if not rows:
                continue
            if image:  # image documents (data.modality=image): the text column names the image
                vectors = embed_images(self.model, self.tokenizer, [load_page(texts[i]) for i in rows], self.head,
                                       self.device, self.spec.prompt)
            elif self.prefix is not None:
                vectors = self._embed_with_prefix([texts[i] for i in rows])
            else:
                vectors = embed_texts(self.model, self.tokenizer, [texts[i] for i in rows], self.cfg.evaluate.max_length,
                                      self.head, self.device, self.spec.prompt, self.spec.pooling)
            for i, v in zip(rows, vectors):
                out[i] = v
        emb = torch.stack(out)  # (B, D) in the batch's order
        if self.head is None:
            emb = F.normalize(emb, dim=-1)
        return {"id": batch["id"], "embedding": emb.cpu().numpy().astype(np.float32)}


    def _embed_with_prefix(self, texts: list[str]) -> Any:
        """embed_texts through the training run's frozen-prefix states: inputs training saw (the unlabeled
        passages, on a dev split over them) run only the top layers; others are computed in full."""
        import torch

        from skr_ray.models.encoding import decoder_body, format_for_embedding
        from skr_ray.models.vision import text_tokenizer

        tokens = format_for_embedding(text_tokenizer(self.tokenizer), texts, self.cfg.evaluate.max_length,
                                      self.spec.prompt, self.spec.pooling)
        with torch.inference_mode():
            states = self.prefix.final_token_states(decoder_body(self.model), tokens).float()
            return self.head(states) if self.head is not None else states


def _training_prefix_cache(cfg: SKRConfig, checkpoint: str, model: Any, directory: str | None) -> Any:
    """The frozen-prefix states the checkpoint's training stored, read-only, when its LoRA sat on a top window
    of layers and those states exist on disk; else None."""
    from skr_ray.models.backbone import model_id
    from skr_ray.models.encoding import decoder_body
    from skr_ray.models.prefix_cache import FrozenPrefixCache, cache_directory, frozen_split

    if not directory:
        return None
    body = decoder_body(model)
    split = frozen_split(checkpoint, len(body.layers))
    if split is None:
        return None
    folder = cache_directory(directory, model_id(cfg.model), split, cfg.model.dtype)
    if not any(folder.glob("shard-*.pt")):
        return None
    cache = FrozenPrefixCache(split, folder, persist=False)
    log.info("encoding over %d cached frozen-prefix states of training (%s)", cache.loaded, folder)
    return cache


def _base_prefix_cache(cfg: SKRConfig, model: Any, directory: str | None) -> Any:
    """For the untouched base model (base, e5v, head_only systems): the frozen-prefix states a top-window
    training run stored are the base model's own lower layers, so inputs training saw run only the top ones."""
    from skr_ray.models.backbone import model_id
    from skr_ray.models.encoding import decoder_body
    from skr_ray.models.prefix_cache import FrozenPrefixCache, cache_directory

    t = cfg.train
    if not directory or not (t.cache_frozen_prefix and t.lora_layers > 0) or cfg.data.modality == "image":
        return None
    n_layers = len(decoder_body(model).layers)
    if t.lora_layers >= n_layers:
        return None
    folder = cache_directory(directory, model_id(cfg.model), n_layers - t.lora_layers, cfg.model.dtype)
    if not any(folder.glob("shard-*.pt")):
        return None
    cache = FrozenPrefixCache(n_layers - t.lora_layers, folder, persist=False)
    log.info("base model: encoding over %d cached frozen-prefix states of training (%s)", cache.loaded, folder)
    return cache


def prefix_cache_root(cfg: SKRConfig) -> str:
    """Where training keeps its frozen-prefix states (train.prefix_cache_dir or OUTPUT_DIR/cache/frozen_prefix)."""
    return str(Path(cfg.train.prefix_cache_dir or Path(cfg.output_dir) / "cache" / "frozen_prefix").resolve())


def _cache_key(spec: EncoderSpec, texts: dict[str, str], ids: list[str], cfg: SKRConfig) -> str:
    """Content, not position or path: the checkpoint's weights (a retrained checkpoint in the same folder gets
    new vectors), the model, the length limit, and every (id, text)."""
    from skr_ray.models.checkpoint import checkpoint_stamp

    stamp = checkpoint_stamp(spec.checkpoint) if spec.checkpoint else ""
    h = hashlib.sha256()
    h.update(json.dumps([asdict(spec), stamp, cfg.model.name_or_path, cfg.evaluate.max_length]).encode())
    for i in ids:
        h.update(f"{i}\0{texts[i]}\0".encode())
    return h.hexdigest()[:16]


def encode_texts(
    texts: dict[str, str], spec: EncoderSpec, cfg: SKRConfig, cache_dir: Path, label: str,
    images: frozenset[str] | set[str] = frozenset(),
) -> tuple[np.ndarray, list[str], float]:
    """(N, D) embeddings in the order of the returned ids, plus seconds spent (0 when cached).

    Ids in ``images`` are image documents: their text names the image file. Results are cached per
    (encoder, text set), so a killed evaluation resumes where it was.
    """
    import ray.data

    # length-sorted batches (little padding); images in batches of their own
    ids = sorted(texts, key=lambda i: (i in images, len(texts[i])), reverse=True)
    key = _cache_key(spec, texts, ids, cfg)
    cache = cache_dir / f"{spec.name}-{label}-{key}.npz"
    if cache.is_file():
        data = np.load(cache, allow_pickle=False)
        log.info("%s/%s: reusing cached embeddings %s", spec.name, label, cache.name)
        return data["embedding"], [str(x) for x in data["id"]], float(data["seconds"])
    start = time.perf_counter()
    ds = ray.data.from_items([{"id": i, "text": texts[i], "image": i in images} for i in ids])
    e = cfg.evaluate
    ds = ds.map_batches(
        TextEncoder,
        fn_constructor_kwargs={"cfg_dict": cfg.to_dict(), "spec": asdict(spec), "replicas": e.num_actors,
                               "prefix_cache_dir": prefix_cache_root(cfg)},
        batch_size=e.batch_size,
        concurrency=e.num_actors,
        num_cpus=1,
        num_gpus=1 if _has_gpu() else 0,
    )
    rows = ds.take_all()
    out_ids = [str(r["id"]) for r in rows]
    emb = np.stack([np.asarray(r["embedding"], dtype=np.float32) for r in rows])
    seconds = time.perf_counter() - start
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, id=np.asarray(out_ids), embedding=emb, seconds=seconds)
    log.info("%s/%s: encoded %d texts in %.1fs", spec.name, label, len(out_ids), seconds)
    return emb, out_ids, seconds


def _has_gpu() -> bool:
    from skr_ray.ray_utils import cluster_gpus

    return cluster_gpus() > 0
