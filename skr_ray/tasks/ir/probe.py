"""Head-only baseline: the backbone stays frozen; only a projection head learns from the self-labels.

With a frozen backbone the final-token states never change, so they are computed once and the head
is trained on them directly — the same InfoNCE objective as SKR, without LoRA.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from skr_ray.models.heads import EmbeddingHead
from skr_ray.tasks.ir.loss import info_nce

log = logging.getLogger(__name__)


def train_projection_head(
    query_states: np.ndarray,
    passage_states: np.ndarray,
    epochs: int,
    batch_size: int,
    temperature: float,
    lr: float = 1e-3,
    seed: int = 0,
) -> EmbeddingHead:
    """(N, D) frozen states of (question, passage) pairs -> trained projection head."""
    torch.manual_seed(seed)
    q_all = torch.from_numpy(query_states).float()
    p_all = torch.from_numpy(passage_states).float()
    head = EmbeddingHead(q_all.shape[1], projection=True)
    opt = torch.optim.AdamW(head.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order = torch.randperm(len(q_all), generator=gen)
        losses = []
        for i in range(0, len(order) - 1, batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < 2:
                continue
            loss = info_nce(head(q_all[idx]), head(p_all[idx]), temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        if epoch == 0 or epoch == epochs - 1:
            log.info("head-only epoch %d: loss %.4f", epoch + 1, float(np.mean(losses)))
    head.eval()
    return head


@torch.no_grad()
def apply_head(head: EmbeddingHead, states: np.ndarray) -> np.ndarray:
    return head(torch.from_numpy(states).float()).numpy()
