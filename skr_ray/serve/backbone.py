"""One backbone replica, many SKR adapters of that base model: PEFT named adapters + task heads, loaded lazily per model id.

`AdapterBank` is plain PyTorch (testable without Serve); `SKRBackbone` wraps it as a Serve deployment
with model multiplexing (LRU-bounded adapters per replica) and dynamic request batching.

While a replica holds exactly one adapter (the common case), that adapter is merged into the base weights
(PEFT ``merge_adapter``): a forward then costs what the base model's does. When a second adapter is loaded it
is unmerged again and the adapters run side by side as PEFT adapters (multiplexing); it is merged again once it
is the only one left.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from typing import Any

import torch
from ray import serve

from skr_ray.config import ModelConfig
from skr_ray.serve.registry import ModelEntry

log = logging.getLogger(__name__)


class AdapterBank:
    """The base model once, with any number of named LoRA adapters and their heads attached."""

    def __init__(self, model_cfg: ModelConfig, device: str = "cpu", layers: int = 0, merge: bool = True) -> None:
        from skr_ray.models.backbone import load_backbone

        self.device = device
        self.base, loaded = load_backbone(model_cfg, device=device, layers=layers)  # layers: see keep_layers
        # Vision-language backbones come with a processor (images + text); text backbones with a tokenizer.
        self.processor = loaded if hasattr(loaded, "image_processor") else None
        self.tokenizer = loaded.tokenizer if self.processor is not None else loaded
        self.model: Any = None  # PeftModel, created with the first adapter
        self.heads: dict[str, torch.nn.Module] = {}
        self.entries: dict[str, ModelEntry] = {}
        self.lock = threading.Lock()  # set_adapter + forward must not interleave across threads
        self.tokens: dict[str, int] = {}  # load generation per adapter: a stale handle never unloads a reload
        self.prefixes: dict[str, Any] = {}  # per AD adapter: the prompt's shared opening as a KV cache
        self._next_token = 0
        self.merge = merge  # False: always the unmerged (multiplexing) path
        self.merged: str | None = None  # the adapter merged into the base weights, if any

    def load(self, entry: ModelEntry) -> int:
        from peft import PeftModel
        from safetensors.torch import load_file

        from skr_ray.models.checkpoint import ADAPTER, HEAD_WEIGHTS
        from skr_ray.tasks import get_task

        with self.lock:
            if entry.id in self.heads:
                return self.tokens[entry.id]
            path = f"{entry.checkpoint}/{ADAPTER}"
            if self.model is None:
                self.model = PeftModel.from_pretrained(self.base, path, adapter_name=entry.id)
            else:
                self._unmerge()  # the base weights must be the base model's before another adapter joins them
                self.model.load_adapter(path, adapter_name=entry.id)
            self.model.eval()
            info = entry.head_info
            if entry.objective == "sft":
                head: torch.nn.Module = torch.nn.Identity()
            else:
                head = get_task(entry.task).make_head(info["hidden_size"], info.get("options", {}))
                weights = f"{entry.checkpoint}/{HEAD_WEIGHTS}"
                import os

                if os.path.isfile(weights):
                    head.load_state_dict(load_file(weights))
            self.heads[entry.id] = head.to(self.device).eval()
            self.prefixes.pop(entry.id, None)
            self.entries[entry.id] = entry
            self._next_token += 1
            self.tokens[entry.id] = self._next_token
            log.info("loaded adapter %s (%s) from %s", entry.id, entry.task, entry.checkpoint)
            return self._next_token

    def unload(self, model_id: str, token: int | None = None) -> None:
        with self.lock:
            if model_id not in self.heads or (token is not None and self.tokens.get(model_id) != token):
                return
            if self.merged == model_id:
                self._unmerge()
            self.tokens.pop(model_id)
            self.heads.pop(model_id)
            self.prefixes.pop(model_id, None)
            self.entries.pop(model_id)
            if self.heads:  # PEFT needs one adapter to remain; the last one is replaced on next load
                if self.model.active_adapter == model_id:
                    self.model.set_adapter(next(iter(self.heads)))
                self.model.delete_adapter(model_id)
            log.info("unloaded adapter %s", model_id)

    @property
    def loaded(self) -> list[str]:
        return list(self.heads)

    def _use(self, model_id: str) -> None:
        """Make ``model_id``'s adapter the one the next forward runs (call with ``self.lock`` held): merged into
        the base weights while it is the only adapter loaded (the forward of the base model itself; merged once,
        kept merged across requests), else unmerged beside the others and picked by name (multiplexing)."""
        if self.merge and len(self.heads) == 1:
            if self.merged != model_id:
                self._unmerge()
                self.model.set_adapter(model_id)
                self.model.merge_adapter()
                self.merged = model_id
                log.info("adapter %s merged into the base weights (the only one loaded)", model_id)
            return
        self._unmerge()
        self.model.set_adapter(model_id)

    def _unmerge(self) -> None:
        """The base model's own weights again (no-op when nothing is merged). PEFT's set_adapter would do it
        anyway, with a warning, on a merged model."""
        if self.merged is not None:
            self.model.unmerge_adapter()
            log.info("adapter %s unmerged (adapters are multiplexed)", self.merged)
            self.merged = None

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    @torch.inference_mode()
    def embed(self, model_id: str, texts: list[str]) -> list[list[float]]:
        from skr_ray.models.encoding import embed_texts

        entry = self.entries[model_id]
        with self.lock:
            self._use(model_id)
            emb = embed_texts(self.model, self.tokenizer, texts, entry.max_length, self.heads[model_id],
                              self.device, entry.head_info.get("prompt", "plain"),
                              entry.head_info.get("pooling", "last_token"), group_by_length=True)
        return emb.cpu().tolist()

    @torch.inference_mode()
    def embed_images(self, model_id: str, raws: list[bytes]) -> list[list[float]]:
        """Image IR: encoded images -> embeddings (the checkpoint's image prompt, its head)."""
        from skr_ray.models.vision import decode_image, embed_images

        if self.processor is None:
            raise ValueError(f"model {model_id!r}: its base model reads no images")
        entry = self.entries[model_id]
        images = [decode_image(raw) for raw in raws]
        with self.lock:
            self._use(model_id)
            emb = embed_images(self.model, self.processor, images, self.heads[model_id], self.device,
                               entry.head_info.get("prompt", "e5v"))
        return emb.cpu().tolist()

    @torch.inference_mode()
    def classify(self, model_id: str, pairs: list[tuple[str, str]]) -> list[float]:
        from skr_ray.tasks.ad.prompts import render_prompts, shared_prompt_prefix

        entry = self.entries[model_id]
        prompts = render_prompts(self.tokenizer, [q for q, _ in pairs], [p for _, p in pairs],
                                 int(entry.head_info.get("max_passage_tokens", 192)))
        rows = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        with self.lock:
            self._use(model_id)
            shared = self.prefixes.get(model_id)
            if shared is None:  # keys/values of the opening depend on the adapter: one cache per adapter
                shared = self.prefixes[model_id] = shared_prompt_prefix(self.model, self.tokenizer)
            states = shared.states(rows).float()
            probs = torch.sigmoid(self.heads[model_id](states))
        return probs.cpu().tolist()

    @torch.inference_mode()
    def classify_images(self, model_id: str, items: list[tuple[bytes, str]]) -> list[float]:
        """Multimodal AD: (encoded image, query) -> probability that the image answers the query."""
        from skr_ray.tasks.ad.prompts import render_image_prompts

        probs = torch.sigmoid(self._image_head(model_id, items, render_image_prompts))
        return probs.float().cpu().tolist()

    @torch.inference_mode()
    def detect(self, model_id: str, items: list[tuple[bytes, str]]) -> list[list[float]]:
        """(encoded image, what to find) -> normalized boxes (x0, y0, x1, y1), one forward pass per batch."""
        from skr_ray.tasks.od.prompts import render_prompts

        return self._image_head(model_id, items, render_prompts).float().cpu().tolist()

    def _image_head(self, model_id: str, items: list[tuple[bytes, str]], render: Any) -> torch.Tensor:
        """The adapter's head on the final-token states of (image, prompt rendered from the query)."""
        from skr_ray.models.vision import decode_image, image_batch, image_final_states

        if self.processor is None:
            raise ValueError(f"model {model_id!r}: its base model reads no images")
        images = [decode_image(raw) for raw, _ in items]
        batch = image_batch(self.processor, images, render(self.processor, [q for _, q in items]), self.device)
        with self.lock:
            self._use(model_id)
            return self.heads[model_id](image_final_states(self.model, batch))


class _Loaded:
    """What the multiplexed loader hands out; Serve drops it (LRU) and __del__ frees the adapter."""

    def __init__(self, bank: AdapterBank, entry: ModelEntry, token: int) -> None:
        self.bank, self.entry, self.token = bank, entry, token

    def __del__(self) -> None:
        try:
            self.bank.unload(self.entry.id, self.token)
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            log.exception("unloading %s failed", self.entry.id)


class AdaptiveBatchWait:
    """How long a dynamic batch waits to fill: ``floor`` while the replica idles, up to ``ceiling`` while it is
    saturated (the next batch started on the heels of the last), as ``share`` of the last batch's model time.

    Under load on a few shared cores the HTTP proxy and ingress deliver requests one by one while the model
    runs, so a batch that starts at once holds one or two of them; waiting a fraction of a forward costs a busy
    replica nothing and fills its batches. A lone request on an idle replica still waits only ``floor``.
    """

    def __init__(self, floor: float, ceiling: float, share: float = 0.25) -> None:
        self.floor, self.ceiling, self.share = floor, max(floor, ceiling), share
        self.last_end = float("-inf")

    def after(self, start: float, end: float) -> float:
        """The wait for the next batch, given the one that ran from ``start`` to ``end``."""
        busy = start - self.last_end < (end - start)  # it started before the replica had idled as long as it ran
        self.last_end = end
        return min(self.ceiling, max(self.floor, self.share * (end - start))) if busy else self.floor


@serve.deployment(name="SKRBackbone")
class SKRBackbone:
    def __init__(self, entries: dict[str, ModelEntry], base: ModelConfig, options: dict[str, Any]) -> None:
        from skr_ray.models.backbone import set_threads

        set_threads(base, 1)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.entries = entries
        from skr_ray.models.checkpoint import head_layers

        # Entries share a backbone only when they read the same decoder depth (serve.registry).
        layers = max((head_layers(e.head_info) for e in entries.values()), default=0)
        # merge_single_adapter (default true): serve a lone adapter merged into the base weights
        self.bank = AdapterBank(base, device, layers=layers, merge=bool(options.get("merge_single_adapter", True)))
        self.max_input_tokens = int(options.get("max_input_tokens", 512))
        floor = float(options.get("batch_wait_timeout_s", 0.01))
        ceiling = float(options.get("max_batch_wait_s", 0.2))
        self.batched = {"embed": self._embed_batch, "classify": self._classify_batch, "detect": self._detect_batch,
                        "classify_images": self._classify_image_batch, "embed_images": self._embed_image_batch}
        self.waits = {kind: AdaptiveBatchWait(floor, ceiling) for kind in self.batched}
        for kind, batched in self.batched.items():
            text = kind in ("embed", "classify")
            batched.set_max_batch_size(int(options.get("max_batch_size" if text else "max_image_batch_size",
                                                       16 if text else 4)))
            batched.set_batch_wait_timeout_s(floor)
        # LRU bound on adapters per replica, from config (the decorator wraps the bound loader).
        async def load(model_id: str) -> _Loaded:
            return await self._load_model(model_id)

        self.get_model = serve.multiplexed(max_num_models_per_replica=int(options.get("max_adapters", 4)))(load)
        # The adaptive admission bound (guard.InFlight): every model request of this replica, whichever ingress
        # replica sent it; beyond it the answer is guard.Shed at once and the ingress turns it into 503.
        from skr_ray.serve import guard

        tolerance = float(options.get("latency_tolerance", guard.DEFAULT_LATENCY_TOLERANCE))
        bound = int(options.get("_backbone_in_flight", 0))  # this replica's share of max_in_flight
        self.admission = guard.InFlight(bound if tolerance else 0, tolerance)
        # per batched kind: batches run, items in them, seconds in the model (for profiles: what a request
        # spends outside the forward is proxy, ingress, queueing and serialization)
        self.stats: dict[str, dict[str, float]] = defaultdict(lambda: {"batches": 0, "items": 0, "model_s": 0.0})

    async def _load_model(self, model_id: str) -> _Loaded:
        entry = self.entries[model_id]  # the ingress only forwards known ids
        token = await asyncio.to_thread(self.bank.load, entry)
        return _Loaded(self.bank, entry, token)

    async def loaded_models(self) -> list[str]:
        return self.bank.loaded

    async def batch_stats(self, reset: bool = False) -> dict[str, dict[str, float]]:
        """Batches, items and model seconds per batched kind since start (or the last reset)."""
        out = {kind: dict(v) for kind, v in self.stats.items()}
        if reset:
            self.stats.clear()
        return out

    async def _timed(self, kind: str, method: Any, items: list[tuple]) -> list[Any]:
        self.admission.batch_started(kind, len(items))
        start, done = time.perf_counter(), False
        try:
            out = await _per_adapter(method, items)
            done = True
            return out
        finally:
            end = time.perf_counter()
            if done:
                self.admission.batch_done(kind, len(items), end - start)
            else:
                self.admission.batch_done(kind, 0, 0.0)  # failed: nothing to learn
            row = self.stats[kind]
            row["batches"] += 1
            row["items"] += len(items)
            row["model_s"] += end - start
            wait = self.waits[kind].after(start, end)
            if self.admission.full or not self.admission.may_share(kind):
                wait = self.waits[kind].floor  # no second request could be admitted to join a batch that waits
            self.batched[kind].set_batch_wait_timeout_s(wait)

    async def count_tokens(self, texts: list[str]) -> list[int]:
        return await asyncio.to_thread(self.bank.count_tokens, texts)  # off the replica's event loop

    async def embed(self, texts: list[str]) -> Any:
        return await self._admitted("embed", self._many, self._embed_batch, texts)

    async def embed_images(self, images: list[bytes]) -> Any:
        return await self._admitted("embed_images", self._many, self._embed_image_batch, images)

    async def classify(self, query: str, passage: str) -> Any:
        return await self._admitted("classify", self._one, self._classify_batch, query, passage)

    async def classify_image(self, image: bytes, query: str) -> Any:
        return await self._admitted("classify_images", self._one, self._classify_image_batch, image, query)

    async def detect(self, image: bytes, query: str) -> Any:
        return await self._admitted("detect", self._one, self._detect_batch, image, query)

    async def _admitted(self, kind: str, run: Any, *args: Any) -> Any:
        """``run(*args)`` when the admission bound admits it, else guard.Shed at once (the bound learns from the
        batches, in _timed)."""
        from skr_ray.serve.guard import Shed

        items = len(args[-1]) if run == self._many else 1
        ticket = self.admission.enter(kind, items)
        if ticket is None:
            return Shed(self.admission.count, self.admission.predict(kind, items) or 0.0)
        try:
            return await run(*args)
        finally:
            self.admission.leave(ticket)

    async def _many(self, batched: Any, inputs: list[Any]) -> list[Any]:
        """A request's inputs of the multiplexed model, each through the dynamic batch of its kind."""
        model_id = serve.get_multiplexed_model_id()
        await self.get_model(model_id)
        return list(await asyncio.gather(*(batched((model_id, x)) for x in inputs)))

    async def _one(self, batched: Any, *request: Any) -> Any:
        """One request of the multiplexed model, through the dynamic batch of its kind."""
        model_id = serve.get_multiplexed_model_id()
        await self.get_model(model_id)
        return await batched((model_id, *request))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _embed_batch(self, items: list[tuple[str, str]]) -> list[list[float]]:
        return await self._timed("embed", lambda model_id, rows: self.bank.embed(model_id, [r[0] for r in rows]),
                                 items)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _classify_batch(self, items: list[tuple[str, str, str]]) -> list[float]:
        return await self._timed("classify", self.bank.classify, items)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
    async def _detect_batch(self, items: list[tuple[str, bytes, str]]) -> list[list[float]]:
        return await self._timed("detect", self.bank.detect, items)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
    async def _embed_image_batch(self, items: list[tuple[str, bytes]]) -> list[list[float]]:
        return await self._timed("embed_images",
                                 lambda model_id, rows: self.bank.embed_images(model_id, [r[0] for r in rows]), items)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
    async def _classify_image_batch(self, items: list[tuple[str, bytes, str]]) -> list[float]:
        return await self._timed("classify_images", self.bank.classify_images, items)


async def _per_adapter(method: Any, items: list[tuple]) -> list[Any]:
    """Run ``method(model_id, rows)`` once per adapter in a mixed batch; answers in request order."""
    out: list[Any] = [None] * len(items)
    for model_id, rows in _group(items).items():
        answers = await asyncio.to_thread(method, model_id, [items[i][1:] for i in rows])
        for i, a in zip(rows, answers):
            out[i] = a
    return out


def _group(items: list[tuple]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[item[0]].append(i)
    return groups
