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
    """Adam on L1 over full-batch epochs; the epoch with the lowest validation L1 is kept (the last without one)."""
    from skr_ray.tasks.od.head import box_l1_loss, make_head

    torch.manual_seed(cfg.seed)
    head = make_head(x_tr.shape[1], {"hidden": cfg.od.head_hidden, "input_norm": cfg.od.head_input_norm})
    opt = torch.optim.Adam(head.parameters(), lr=cfg.od.probe_lr)
    xt, yt = torch.tensor(x_tr), torch.tensor(y_tr)
    xv, yv = torch.tensor(x_va), torch.tensor(y_va)
    best, best_epoch, best_state = float("inf"), epochs - 1, None
    bs = max(2, cfg.train.batch_size)
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(epochs):
        head.train()
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), bs):
            idx = order[i : i + bs]
            if len(idx) < 2:
                continue
            opt.zero_grad()
            box_l1_loss(head(xt[idx]), yt[idx]).backward()
            opt.step()
        if len(xv):
            head.eval()
            with torch.no_grad():
                loss = box_l1_loss(head(xv), yv).item()
            if loss < best:
                best, best_epoch = loss, epoch
                best_state = {k: v.clone() for k, v in head.state_dict().items()}
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    return head, best_epoch


def self_label_states(cfg: SKRConfig, art: Artifacts, train: list[dict], val: list[dict],
                      cache_dir: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from skr_ray.tasks.od.reading import read_pages

    pages = [{"page_id": e["page_id"], "path": e["path"], "page": e.get("page", -1)} for e in train + val]
    states, _ = read_pages(cfg, pages, "states", None, cache_dir / "base_states_selflabels.json")
    x = lambda rows: np.stack([states[e["page_id"]] for e in rows]) if rows else np.zeros((0, 1), np.float32)  # noqa: E731
    y = lambda rows: np.asarray([e["box"] for e in rows], dtype=np.float32).reshape(-1, 4)  # noqa: E731
    return x(train), y(train), x(val), y(val)


def probe_head_state(cfg: SKRConfig, art: Artifacts, train: list[dict], val: list[dict]) -> dict[str, torch.Tensor]:
    x_tr, y_tr, x_va, y_va = self_label_states(cfg, art, train, val, art.train_dir / "probe")
    head, epoch = fit_box_head(cfg, x_tr, y_tr, x_va, y_va, cfg.od.probe_epochs)
    log.info("probe: box head fitted on frozen states of %d pages, epoch %d of %d kept", len(x_tr), epoch + 1,
             cfg.od.probe_epochs)
    return head.state_dict()
