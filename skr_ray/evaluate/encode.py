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
from skr_ray.models.prefix_cache import prefix_cache_root
from skr_ray.ray_utils import actor_pool, replica_pool

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
    """Ray Data UDF: loads the encoder in __init__, embeds a batch of texts in __call__.

    ``spec`` is one EncoderSpec (as a dict) or a list of them that share their weights (same ``checkpoint``):
    rows then say which one they are for in a ``job`` column, so one actor pool (one model load) serves the
    base, E5-V and head-only inputs of an evaluation together.

    Each output row carries ``seconds``, its share of the model time of its job's rows in the batch (the actor's
    start and the model load are not in it), and ``cached``, whether it ran over stored frozen-prefix states.
    """

    def __init__(self, cfg_dict: dict[str, Any], spec: dict[str, Any] | list[dict[str, Any]], replicas: int,
                 prefix_cache_dir: str | None = None) -> None:
        import torch

        from skr_ray.models.backbone import load_backbone, set_threads

        self.cfg = from_dict(cfg_dict)
        self.specs = [EncoderSpec(**s) for s in (spec if isinstance(spec, list) else [spec])]
        if len({s.checkpoint for s in self.specs}) != 1:
            raise ValueError("one TextEncoder serves specs with the same weights only")
        self.spec = self.specs[0]
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
        from skr_ray.pages import load_page

        texts = [str(t) for t in batch["text"]]
        is_image = [bool(x) for x in batch["image"]] if "image" in batch else [False] * len(texts)
        jobs = [int(j) for j in batch["job"]] if "job" in batch else [0] * len(texts)
        out: list[torch.Tensor | None] = [None] * len(texts)
        seconds = np.zeros(len(texts), dtype=np.float64)
        cached = np.zeros(len(texts), dtype=bool)
        for job in sorted(set(jobs)):
            spec = self.specs[job]
            for image in (False, True):
                rows = [i for i, (f, j) in enumerate(zip(is_image, jobs)) if f == image and j == job]
                if not rows:
                    continue
                start = time.perf_counter()
                if image:  # image documents (data.modality=image): the text column names the image
                    vectors = embed_images(self.model, self.tokenizer, [load_page(texts[i]) for i in rows], self.head,
                                           self.device, spec.prompt)
                elif self.prefix is not None:
                    vectors, hits = self._embed_with_prefix([texts[i] for i in rows], spec)
                    cached[rows] = hits
                else:
                    vectors = embed_texts(self.model, self.tokenizer, [texts[i] for i in rows],
                                          self.cfg.evaluate.max_length, self.head, self.device, spec.prompt,
                                          spec.pooling, group_by_length=True)
                vectors = vectors.cpu()  # waits for the device: the time below is the model's
                seconds[rows] = (time.perf_counter() - start) / len(rows)
                for i, v in zip(rows, vectors):
                    out[i] = v
        emb = torch.stack(out)  # (B, D) in the batch's order
        if self.head is None:
            emb = F.normalize(emb, dim=-1)
        out_batch = {"id": batch["id"], "embedding": emb.numpy().astype(np.float32), "seconds": seconds,
                     "cached": cached}
        if "job" in batch:
            out_batch["job"] = batch["job"]
        return out_batch

    def _embed_with_prefix(self, texts: list[str], spec: EncoderSpec) -> tuple[Any, list[bool]]:
        """embed_texts through the training run's frozen-prefix states: inputs training saw (the unlabeled
        passages, on a dev split over them) run only the top layers; others are computed in full. Also says
        which texts found their states stored."""
        import torch

        from skr_ray.models.common import text_tokenizer
        from skr_ray.models.encoding import decoder_body, format_for_embedding

        tokens = format_for_embedding(text_tokenizer(self.tokenizer), texts, self.cfg.evaluate.max_length,
                                      spec.prompt, spec.pooling)
        with torch.inference_mode():
            states = self.prefix.final_token_states(decoder_body(self.model), tokens).float()
            return (self.head(states) if self.head is not None else states), self.prefix.last_hits


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


@dataclass
class EncodeJob:
    """Texts (id -> text) to embed with one encoder; ids in ``images`` are image documents (their text names
    the image). ``label`` names the set in the cache file (eval, selflabels, ...)."""

    texts: dict[str, str]
    spec: EncoderSpec
    label: str
    images: frozenset[str] | set[str] = frozenset()


def encode_texts(
    texts: dict[str, str], spec: EncoderSpec, cfg: SKRConfig, cache_dir: Path, label: str,
    images: frozenset[str] | set[str] = frozenset(),
) -> tuple[np.ndarray, list[str], float]:
    """(N, D) embeddings in the order of the returned ids, plus the model seconds they took (see
    :func:`encode_many`; when cached, the seconds of the run that encoded them).

    Ids in ``images`` are image documents: their text names the image file. Results are cached per
    (encoder, text set), so a killed evaluation resumes where it was.
    """
    return encode_many([EncodeJob(texts, spec, label, images)], cfg, cache_dir)[0]


def encode_many(jobs: list[EncodeJob], cfg: SKRConfig, cache_dir: Path) -> list[tuple[np.ndarray, list[str], float]]:
    """:func:`encode_texts` for several jobs, with one Ray Data pass (one actor pool start, one model load) per
    set of weights instead of one per job: the base, E5-V and head-only inputs of an evaluation share one pass,
    SKR's evaluation and validation inputs another. Each job is cached on its own, under the key
    :func:`encode_texts` uses.

    A job's seconds are the model time of its own texts, summed over the batches that held them, on whichever
    replica ran them (as AD and OD time their rows): the actor pool's start and the model load, which a pass
    pays once however many texts it holds, are not in them, so systems encoded in passes of different sizes
    (the base model's pass carries three systems' inputs, SKR's one) compare per text on equal terms."""
    import ray.data

    results: list[Any] = [None] * len(jobs)
    todo: dict[str | None, list[tuple[int, list[str], Path]]] = {}
    for j, job in enumerate(jobs):
        # length-sorted batches (little padding); images in batches of their own
        ids = sorted(job.texts, key=lambda i: (i in job.images, len(job.texts[i])), reverse=True)
        cache = cache_dir / f"{job.spec.name}-{job.label}-{_cache_key(job.spec, job.texts, ids, cfg)}.npz"
        data = np.load(cache, allow_pickle=False) if cache.is_file() else None
        if data is not None and TIMING in data:
            log.info("%s/%s: reusing cached embeddings %s", job.spec.name, job.label, cache.name)
            results[j] = (data["embedding"], [str(x) for x in data["id"]], float(data["seconds"]))
        else:  # (a file without TIMING holds a pass's wall time shared by text count: encoded again)
            todo.setdefault(job.spec.checkpoint, []).append((j, ids, cache))
    e = cfg.evaluate
    gpus = 1 if _has_gpu() else 0
    actors = replica_pool(e.num_actors, 1, gpus, cfg.model) if todo else 1
    for members in todo.values():
        start = time.perf_counter()
        rows = [{"id": i, "text": jobs[j].texts[i], "image": i in jobs[j].images, "job": k}
                for k, (j, ids, _) in enumerate(members) for i in ids]
        ds = ray.data.from_items(rows).map_batches(
            TextEncoder,
            fn_constructor_kwargs={"cfg_dict": cfg.to_dict(), "spec": [asdict(jobs[j].spec) for j, _, _ in members],
                                   "replicas": actors, "prefix_cache_dir": prefix_cache_root(cfg)},
            batch_size=e.batch_size,
            compute=actor_pool(actors),
            num_cpus=1,
            num_gpus=gpus,
        )
        # "id" is unique within a job only: the output's id column comes back with the row's job beside it.
        # Blocks are taken as they finish, as arrays (no row dicts): the driver holds the vectors and no more.
        by_job: dict[int, dict[str, np.ndarray]] = {}
        spent: dict[int, float] = {}
        hits: dict[int, int] = {}
        for block in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for k, i, vector, secs, cached in zip(block["job"], block["id"], block["embedding"], block["seconds"],
                                                  block["cached"]):
                k = int(k)
                by_job.setdefault(k, {})[str(i)] = np.asarray(vector, dtype=np.float32)
                spent[k] = spent.get(k, 0.0) + float(secs)
                hits[k] = hits.get(k, 0) + int(cached)
        wall = time.perf_counter() - start
        cache_dir.mkdir(parents=True, exist_ok=True)
        for k, (j, ids, cache) in enumerate(members):
            got = by_job.get(k, {})
            if len(got) != len(ids):
                raise RuntimeError(f"{jobs[j].spec.name}/{jobs[j].label}: {len(ids) - len(got)} of {len(ids)} texts "
                                   "came back without an embedding")
            emb = np.stack([got[i] for i in ids])
            seconds = spent.get(k, 0.0)
            np.savez(cache, id=np.asarray(ids), embedding=emb, seconds=seconds, cached=hits.get(k, 0),
                     **{TIMING: True})
            log.info("%s/%s: encoded %d texts in %.1f model-s (%.2f s per 100; %d over stored frozen-prefix states); "
                     "the pass of %d texts took %.1f s, actor start and model load included", jobs[j].spec.name,
                     jobs[j].label, len(ids), seconds, 100 * seconds / len(ids), hits.get(k, 0), len(rows), wall)
            results[j] = (emb, ids, seconds)
    return results


TIMING = "model_seconds"
"""Marks an embedding cache file whose ``seconds`` are model time (encode_many), not a pass's shared wall time."""


def _has_gpu() -> bool:
    from skr_ray.ray_utils import cluster_gpus

    return cluster_gpus() > 0
