"""A box head fitted on frozen base states (L1): the head-only baseline, and SKR's starting head (probe)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from skr_ray.artifacts import Artifacts
from skr_ray.config import SKRConfig

log = logging.getLogger(__name__)


def fit_box_head(cfg: SKRConfig, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray,
                 epochs: int) -> tuple[torch.nn.Module, int]:
    """Adam on L1; the epoch with the lowest validation L1 is kept (the last without validation pages)."""
    from skr_ray.models.heads import fit_on_states, make_box_head
    from skr_ray.tasks.od.loss import box_l1_loss

    torch.manual_seed(cfg.seed)
    head = make_box_head(x_tr.shape[1], {"hidden": cfg.od.head_hidden, "input_norm": cfg.od.head_input_norm})
    history = fit_on_states(head, box_l1_loss, torch.optim.Adam(head.parameters(), lr=cfg.od.probe_lr),
                            torch.tensor(x_tr), torch.tensor(y_tr), torch.tensor(x_va), torch.tensor(y_va), epochs,
                            max(2, cfg.train.batch_size), cfg.seed, keep_best=True)
    kept = min(history, key=lambda h: h["val_loss"])["epoch"] if history else epochs - 1
    return head, kept


def states_cache(art: Artifacts) -> Any:
    """Where the base model's states of the self-labelled pages are cached: computed once for the probe
    (train) and reused by the head-only baseline (evaluate)."""
    return art.train_dir / "probe"


def self_label_states(cfg: SKRConfig, art: Artifacts, train: list[dict], val: list[dict],
                      cache_dir: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from skr_ray.tasks.od.reading import read_pages

    pages = [{"page_id": e["page_id"], "path": e["path"], "page": e.get("page", -1)} for e in train + val]
    states, _ = read_pages(cfg, pages, "states", None, cache_dir / "base_states_selflabels.json")
    x = lambda rows: np.stack([states[e["page_id"]] for e in rows]) if rows else np.zeros((0, 1), np.float32)  # noqa: E731
    y = lambda rows: np.asarray([e["box"] for e in rows], dtype=np.float32).reshape(-1, 4)  # noqa: E731
    return x(train), y(train), x(val), y(val)


def probe_head_state(cfg: SKRConfig, art: Artifacts, train: list[dict], val: list[dict]) -> dict[str, torch.Tensor]:
    x_tr, y_tr, x_va, y_va = self_label_states(cfg, art, train, val, states_cache(art))
    head, epoch = fit_box_head(cfg, x_tr, y_tr, x_va, y_va, cfg.od.probe_epochs)
    log.info("probe: box head fitted on frozen states of %d pages, epoch %d of %d kept", len(x_tr), epoch + 1,
             cfg.od.probe_epochs)
    return head.state_dict()
