"""Classifier heads fitted on frozen base states of the self-labelled pairs.

Two users: the head-only baseline (the head is the whole system), and SKR's head initialisation
("linear probing, then fine-tuning", Kumar et al. 2022): a randomly initialised head's early
gradients scramble the pretrained features the LoRA layers start from; a head first fitted on
the frozen states lets the joint training refine features instead. Both read the self-labels only.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from skr_ray.artifacts import Artifacts
from skr_ray.config import SKRConfig

log = logging.getLogger(__name__)


def self_label_states(cfg: SKRConfig, art: Artifacts, train: list[dict], val: list[dict]) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_val, y_val): final-token states of the base model (cached on disk)."""
    from skr_ray.tasks.ad.scoring import cached_score_pairs

    both = [{"pair_id": f"{i}", "query": e["query"], "passage": e["passage"]} for i, e in enumerate(train + val)]
    scored = cached_score_pairs(both, cfg, "states", None, art.embedding_cache, "selflabel_states")
    x = torch.tensor(np.asarray([r["state"] for r in scored]), dtype=torch.float32)
    y = torch.tensor([e["label"] for e in train + val], dtype=torch.float32)
    n = len(train)
    return x[:n], y[:n], x[n:], y[n:]


def fit_head(
    cfg: SKRConfig,
    x_tr: torch.Tensor,
    y_tr: torch.Tensor,
    x_va: torch.Tensor,
    y_va: torch.Tensor,
    pos_weight: float,
    epochs: int,
    lr: float = 1e-3,
    keep_best: bool = False,
) -> tuple[Any, float, list[dict[str, float]]]:
    """Train a ClassifierHead on states -> (head in eval mode, val threshold, per-epoch val history).

    ``keep_best``: return the epoch with the lowest validation loss instead of the last one.
    """
    from skr_ray.models.heads import fit_on_states
    from skr_ray.models.heads import ClassifierHead
    from skr_ray.tasks.ad.loss import bce_loss
    from skr_ray.tasks.ad.metrics import best_threshold

    torch.manual_seed(cfg.seed)
    head = ClassifierHead(x_tr.shape[1], cfg.ad.head_hidden, input_norm=cfg.ad.head_input_norm)
    history = fit_on_states(head, lambda out, y: bce_loss(out, y, pos_weight), torch.optim.AdamW(head.parameters(), lr=lr),
                            x_tr, y_tr, x_va, y_va, epochs, cfg.train.batch_size, cfg.seed, keep_best)
    with torch.no_grad():
        val_scores = torch.sigmoid(head(x_va)).numpy() if len(x_va) else np.zeros(0)
    threshold = best_threshold(y_va.numpy(), val_scores) if len(x_va) else 0.5
    return head, threshold, history


def probe_head_state(cfg: SKRConfig, art: Artifacts, train: list[dict], val: list[dict],
                     pos_weight: float) -> dict[str, torch.Tensor]:
    """SKR's initial head: fitted on frozen states, the epoch with the lowest validation loss kept."""
    x_tr, y_tr, x_va, y_va = self_label_states(cfg, art, train, val)
    head, _, history = fit_head(cfg, x_tr, y_tr, x_va, y_va, pos_weight, cfg.ad.probe_epochs, keep_best=True)
    if history:
        best = min(history, key=lambda h: h["val_loss"])
        log.info("probe head for SKR's initialisation: epoch %d of %d, validation loss %.4f",
                 best["epoch"] + 1, cfg.ad.probe_epochs, best["val_loss"])
    return head.state_dict()
