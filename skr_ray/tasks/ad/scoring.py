"""Ray Data UDF that reads an answerability score out of one model replica, for a batch of pairs.

Modes (all on the same chat prompt, see prompts.py):
  judge  - greedy generation: the text answer, its parsed yes/no, and softmax(yes, no) of the first
           generated token (base self-annotation, base NTP baseline, SFT baseline);
  head   - one forward pass, final-token state -> trained classifier head -> probability (SKR);
  states - one forward pass, final-token states only (head-only baseline trains/applies its head on them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from skr_ray.config import from_dict
from skr_ray.ray_utils import actor_pool

log = logging.getLogger(__name__)

MODES = ("judge", "head", "states")


class PairScorer:
    def __init__(self, cfg_dict: dict[str, Any], mode: str, checkpoint: str | None, replicas: int) -> None:
        import torch

        from skr_ray.models.backbone import load_backbone, model_id, set_threads
        from skr_ray.tasks.ad.labels import yes_no_token_ids

        if mode not in MODES:
            raise ValueError(f"unknown scoring mode {mode!r}; known: {MODES}")
        self.cfg = from_dict(cfg_dict)
        self.mode = mode
        set_threads(self.cfg.model, replicas)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.head = None
        if checkpoint:
            from skr_ray.models.checkpoint import load_skr_model

            skr = load_skr_model(checkpoint, device=self.device)
            self.model = skr.model.merge_and_unload()  # same outputs, plain forward
            self.tokenizer = skr.tokenizer
            if skr.head_info.get("objective", "head") == "head":
                self.head = skr.head
        else:  # the base model; the head-only baseline's states come from the layer its head reads
            self.model, self.tokenizer = load_backbone(self.cfg.model, device=self.device,
                                                       layers=base_layers(self.cfg, mode, checkpoint))
        if mode == "head" and self.head is None:
            raise ValueError("mode 'head' needs an SKR checkpoint with a classifier head")
        self.model.eval()
        from skr_ray.models.common import text_tokenizer

        self.processor = self.tokenizer if self.cfg.data.modality == "image" else None  # (question, image) pairs
        self.tokenizer = text_tokenizer(self.tokenizer)
        self.yes_ids, self.no_ids = yes_no_token_ids(self.tokenizer)
        self.shared = None
        if mode != "judge" and self.processor is None:  # one forward per case: the prompt's common opening runs once per replica
            from skr_ray.tasks.ad.prompts import shared_prompt_prefix

            self.shared = shared_prompt_prefix(self.model, self.tokenizer)
        self.model_id = model_id(self.cfg.model)

    def _prompts(self, batch: dict[str, np.ndarray]) -> list[str]:
        from skr_ray.tasks.ad.prompts import render_prompts

        return render_prompts(
            self.tokenizer, [str(q) for q in batch["query"]], [str(p) for p in batch["passage"]],
            self.cfg.ad.max_passage_tokens,
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch

        if self.processor is not None:
            return self._score_images(batch)
        prompts = self._prompts(batch)
        start = time.perf_counter()
        out: dict[str, Any] = {k: batch[k] for k in batch}
        with torch.inference_mode():
            if self.mode == "judge":
                enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
                out.update(self._judge(enc.to(self.device)))
            else:
                rows = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
                states = self.shared.states(rows).float()
                if self.mode == "head":
                    out["score"] = torch.sigmoid(self.head(states)).cpu().numpy().astype(np.float64)
                else:
                    out["state"] = list(states.cpu().numpy().astype(np.float32))
        # Per-row share of the batch's wall time: summed over rows it is the time spent scoring.
        out["seconds"] = np.full(len(prompts), (time.perf_counter() - start) / len(prompts))
        return out

    def _score_images(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """(question, image) pairs: the passage column names the image; same modes, the image AD prompt."""
        import torch

        from skr_ray.models.vision import image_batch, image_final_states
        from skr_ray.pages import load_page
        from skr_ray.tasks.ad.prompts import render_image_prompts

        out: dict[str, Any] = {k: batch[k] for k in batch}
        images = [load_page(str(p)) for p in batch["passage"]]
        start = time.perf_counter()
        enc = image_batch(self.processor, images, render_image_prompts(self.processor, [str(q) for q in batch["query"]]),
                          self.device)
        with torch.inference_mode():
            if self.mode == "judge":
                out.update(self._judge(enc))
            else:
                states = image_final_states(self.model, enc).float()
                if self.mode == "head":
                    out["score"] = torch.sigmoid(self.head(states)).cpu().numpy().astype(np.float64)
                else:
                    out["state"] = list(states.cpu().numpy().astype(np.float32))
        out["seconds"] = np.full(len(images), (time.perf_counter() - start) / len(images))
        return out

    def _judge(self, enc: Any) -> dict[str, Any]:
        from skr_ray.tasks.ad.labels import parse_yes_no, yes_probability

        gen = self.model.generate(
            **enc,
            max_new_tokens=self.cfg.ad.max_new_tokens,
            do_sample=False, temperature=None, top_p=None, top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        p_yes = yes_probability(gen.logits[0], self.yes_ids, self.no_ids).cpu().numpy().astype(np.float64)
        texts = self.tokenizer.batch_decode(gen.sequences[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        labels, statuses = [], []
        for text in texts:
            label, status = parse_yes_no(text)
            labels.append(-1 if label is None else label)
            statuses.append(status)
        return {
            "raw_output": [t.strip() for t in texts],
            "answer": np.asarray(labels, dtype=np.int64),
            "p_yes": p_yes,
            "status": statuses,
        }


def score_pairs(
    rows: list[dict[str, Any]], cfg: Any, mode: str, checkpoint: str | None = None
) -> list[dict[str, Any]]:
    """Score rows (dicts with pair_id, query, passage, ...) on a Ray Data actor pool; input order kept."""
    import ray.data

    from skr_ray.ray_utils import cluster_gpus, replica_pool

    if not rows:
        return []
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["passage"]) + len(rows[i]["query"]), reverse=True)
    e = cfg.evaluate
    gpus = 1 if cluster_gpus() > 0 else 0
    actors = replica_pool(e.num_actors, 1, gpus, cfg.model)
    ds = ray.data.from_items([rows[i] for i in order])
    ds = ds.map_batches(
        PairScorer,
        fn_constructor_kwargs={"cfg_dict": cfg.to_dict(), "mode": mode, "checkpoint": checkpoint,
                               "replicas": actors},
        batch_size=e.batch_size,
        compute=actor_pool(actors),
        num_cpus=1,
        num_gpus=gpus,
    )
    by_id = {r["pair_id"]: r for r in ds.take_all()}
    return [by_id[r["pair_id"]] for r in rows]


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def base_layers(cfg: Any, mode: str, checkpoint: str | None) -> int:
    """Decoder layers the base model runs when scoring without a checkpoint: the head-only baseline's states
    come from the layer its head reads (``ad.head_layer``); the judge keeps every layer (0)."""
    return cfg.ad.head_layer if not checkpoint and mode == "states" else 0


def score_cache_path(rows: list[dict], cfg: Any, mode: str, checkpoint: str | None, cache: Path, name: str) -> Path:
    """Keyed by content: the checkpoint's weights and every row's (id, question, passage), so another seed,
    split or sample with the same row ids never reads the states of other pairs."""
    from skr_ray.models.checkpoint import checkpoint_stamp

    stamp = checkpoint_stamp(checkpoint) if checkpoint else cfg.model.name_or_path
    layers = base_layers(cfg, mode, checkpoint)
    if layers:
        stamp += f"|layers={layers}"  # another layer's states are other states
    content = hashlib.sha256()
    for r in rows:
        content.update(f"{r['pair_id']}\0{r['query']}\0{r['passage']}\0".encode())
    key = _key(mode, stamp, cfg.ad.max_passage_tokens, cfg.ad.max_new_tokens, content.hexdigest())
    return cache / f"{name}-{key}.json"


def cached_score_pairs(rows: list[dict], cfg: Any, mode: str, checkpoint: str | None, cache: Path,
                       name: str) -> list[dict]:
    """score_pairs with an on-disk cache per (system, checkpoint, pairs): a killed evaluation resumes."""
    path = score_cache_path(rows, cfg, mode, checkpoint, cache, name)
    if path.is_file():
        log.info("%s: reusing cached scores %s", name, path.name)
        return json.loads(path.read_text())
    keep = ("pair_id", "score", "raw_output", "answer", "p_yes", "status", "seconds", "state")
    out = [{k: _plain(r[k]) for k in keep if k in r} for r in score_pairs(rows, cfg, mode, checkpoint)]
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def generation_params(cfg: Any) -> str:
    """How the self-labels were made (stored with every labelled pair, compared on resume)."""
    if cfg.ad.label_source == "source":
        return json.dumps({"label_source": "source"})
    return json.dumps({"max_new_tokens": cfg.ad.max_new_tokens, "max_passage_tokens": cfg.ad.max_passage_tokens,
                       "greedy": True, "seed": cfg.seed})
