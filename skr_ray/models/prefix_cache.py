"""Frozen-prefix cache: run the frozen lower decoder layers once per input, reuse them every epoch.

With LoRA on the top K decoder layers only (``train.lora_layers``), everything below layer L-K is
frozen, has no dropout, and therefore maps an input to the same hidden states in every epoch. Caching
those states per input turns every later pass over the data into a forward + backward through K
layers instead of L. The result is the same model as training with ``lora_layers=K`` without the
cache (checked in the unit tests), only cheaper: on a 2-core CPU this is what makes several epochs
over ~1k self-labels fit in a session.

RoPE scores depend on position differences only, so states computed with one amount of left padding
can be reused under another: rows are cached unpadded and re-padded per batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from skr_ray.config import SKRConfig

log = logging.getLogger(__name__)


@contextlib.contextmanager
def layer_window(body: nn.Module, start: int, stop: int | None, final_norm: bool) -> Iterator[nn.Module]:
    """Temporarily make ``body`` (a decoder stack with ``.layers`` and ``.norm``) run layers[start:stop]."""
    layers, norm = body.layers, body.norm
    body.layers = nn.ModuleList(list(layers)[start:stop])
    if not final_norm:
        body.norm = nn.Identity()
    try:
        yield body
    finally:
        body.layers = layers
        body.norm = norm


def check_supported(body: nn.Module, split: int) -> None:
    """The window trick needs a plain stack: ``.layers``/``.norm`` and one attention type for all layers."""
    if not (hasattr(body, "layers") and hasattr(body, "norm")):
        raise ValueError(f"{type(body).__name__} has no .layers/.norm; set train.cache_frozen_prefix=false")
    types = set(getattr(body.config, "layer_types", None) or [])
    if len(types) > 1:  # per-layer masks are looked up by absolute layer index inside the stack
        raise ValueError(
            f"{type(body).__name__} mixes attention types {sorted(types)}; set train.cache_frozen_prefix=false"
        )
    n = len(body.layers)
    if not 0 < split < n:
        raise ValueError(f"frozen prefix of {split} layers needs 0 < split < {n} layers")


class FrozenPrefixCache:
    """Unpadded (T_i, D) states after the first ``split`` decoder layers, keyed by token ids.

    With ``directory``, every batch of newly computed states is also written there as one shard (atomically),
    and the shards already there are loaded first: a resumed or re-run training (other epochs, other
    learning rate, other top-layer LoRA settings with the same split) starts with the states at hand.
    ``directory`` must be specific to the model and the split (see :func:`cache_directory`); the token ids
    inside a shard key its rows.
    """

    def __init__(self, split: int, directory: str | Path | None = None, persist: bool = True) -> None:
        self.split = split
        self.persist = persist  # False: read the shards there, write none (evaluation)
        self.store: dict[tuple[int, ...], torch.Tensor] = {}
        self.hits = 0
        self.misses = 0
        self.last_hits: list[bool] = []  # per row of the last states() call: its states were stored already
        self.loaded = 0
        self.directory = Path(directory) if directory else None
        if self.directory is not None:
            self._load()

    def _load(self) -> None:
        for shard in sorted(self.directory.glob("shard-*.pt")):
            try:
                data = torch.load(shard, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - a shard cut short by a kill: recompute its rows
                log.warning("frozen-prefix shard %s is unreadable (%s); its rows will be recomputed", shard, exc)
                continue
            for key, state in zip(data["keys"], data["states"]):
                self.store[tuple(key.tolist())] = state
        self.loaded = len(self.store)
        if self.loaded:
            log.info("frozen-prefix cache: %d inputs loaded from %s", self.loaded, self.directory)

    def _save(self, keys: list[tuple[int, ...]]) -> None:
        import os
        import uuid

        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"shard-{uuid.uuid4().hex}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save({"keys": [torch.tensor(k, dtype=torch.int32) for k in keys],
                    "states": [self.store[k].cpu() for k in keys]}, tmp)
        os.replace(tmp, path)

    def __len__(self) -> int:
        return len(self.store)

    @staticmethod
    def _rows(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[tuple[int, ...]]:
        return [tuple(ids[mask.bool()].tolist()) for ids, mask in zip(input_ids, attention_mask)]

    @torch.no_grad()
    def _fill(self, body: nn.Module, keys: list[tuple[int, ...]], device: torch.device) -> None:
        width = max(len(k) for k in keys)
        ids = torch.zeros((len(keys), width), dtype=torch.long, device=device)  # pad ids are masked out
        mask = torch.zeros((len(keys), width), dtype=torch.long, device=device)
        for i, k in enumerate(keys):
            ids[i, width - len(k) :] = torch.tensor(k, device=device)
            mask[i, width - len(k) :] = 1
        with layer_window(body, 0, self.split, final_norm=False):
            hidden = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state  # (B, T, D)
        for i, k in enumerate(keys):
            self.store[k] = hidden[i, width - len(k) :].clone()  # (T_i, D), detached
        if self.directory is not None and self.persist:
            self._save(keys)

    def states(self, body: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, D) left-padded prefix states for a left-padded batch, computing only unseen rows."""
        keys = self._rows(input_ids, attention_mask)
        self.last_hits = [k in self.store for k in keys]
        missing = list(dict.fromkeys(k for k in keys if k not in self.store))
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        if missing:
            self._fill(body, missing, input_ids.device)
        width = input_ids.shape[1]
        first = self.store[keys[0]]
        out = first.new_zeros((len(keys), width, first.shape[-1]))
        for i, k in enumerate(keys):
            out[i, width - len(k) :] = self.store[k]
        return out

    def final_token_states(self, body: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, D): the top layers (with their LoRA) over cached prefix states, pooled as the batch says."""
        from skr_ray.models.encoding import pool_states

        mask = batch["attention_mask"]
        prefix = self.states(body, batch["input_ids"], mask)
        with layer_window(body, self.split, None, final_norm=True):
            out = body(inputs_embeds=prefix, attention_mask=mask, use_cache=False)
        return pool_states(out.last_hidden_state, mask, batch.get("pool_mask"))


def cache_directory(root: str | Path, model_key: str, split: int, dtype: str) -> Path:
    """The shard folder of one (model, frozen layers, dtype) under ``root``: states of another model or split
    never mix in."""
    digest = hashlib.sha256(f"{model_key}|split={split}|{dtype}".encode()).hexdigest()[:16]
    return Path(root) / f"split{split}-{digest}"


def prefix_cache_root(cfg: SKRConfig) -> str:
    """Where training keeps its frozen-prefix states (train.prefix_cache_dir or OUTPUT_DIR/cache/frozen_prefix)."""
    return str(Path(cfg.train.prefix_cache_dir or Path(cfg.output_dir) / "cache" / "frozen_prefix").resolve())


def frozen_split(checkpoint_dir: str | Path, n_layers: int) -> int | None:
    """The number of untouched lower layers of an SKR checkpoint whose LoRA sits on a top window of layers
    (``train.lora_layers``), else None: below that split its model computes what the base model does."""
    import json

    config = Path(checkpoint_dir) / "adapter" / "adapter_config.json"
    if not config.is_file():
        return None
    layers = json.loads(config.read_text()).get("layers_to_transform")
    if not layers or sorted(layers) != list(range(min(layers), n_layers)):
        return None
    return min(layers)
