"""The task heads' shared body: a 3-layer MLP on the final-token state, optionally standardized first.

``input_norm="batch"`` standardizes the state per feature (BatchNorm without affine terms). A decoder's
final-token states share one large common component (SmolLM2-135M: norm ~54, per-feature std < 1 across
inputs); the MLP has to pick its signal out of the small variations around it. Standardizing them is
what lets a head learn on a few hundred self-labels (see docs/tasks/ad.md).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from collections.abc import Callable

from skr_ray.config import HEAD_INPUT_NORMS as INPUT_NORMS


class MLPHead(nn.Module):
    """(B, D) -> (B, out_features): Linear-GELU-Dropout twice, then Linear."""

    def __init__(self, hidden_size: int, out_features: int, hidden: int = 1024, dropout: float = 0.1,
                 input_norm: str = "none") -> None:
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"unknown head input_norm {input_norm!r}; known: {INPUT_NORMS}")
        self.norm = nn.BatchNorm1d(hidden_size, affine=False) if input_norm == "batch" else None
        self.net = nn.Sequential(
            nn.Linear(hidden_size, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_features),
        )

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        x = states.float()
        if self.norm is not None:
            n = self.norm
            # A batch of one has no spread to measure: it is standardized with the running statistics.
            use_batch = self.training and x.shape[0] > 1
            x = F.batch_norm(x, n.running_mean, n.running_var, training=use_batch, momentum=n.momentum, eps=n.eps)
        return self.net(x)


def fit_on_states(head: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  optimizer: torch.optim.Optimizer, x_tr: torch.Tensor, y_tr: torch.Tensor, x_va: torch.Tensor,
                  y_va: torch.Tensor, epochs: int, batch_size: int, seed: int,
                  keep_best: bool = False) -> list[dict[str, float]]:
    """Train ``head`` on precomputed states (a probe, or a head-only baseline); returns the per-epoch
    validation history, the head left in eval mode.

    Shuffled mini-batches (a batch of one is skipped: BatchNorm needs two rows); ``keep_best``: the head ends
    as the epoch with the lowest validation loss instead of the last one.
    """
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    for epoch in range(epochs):
        head.train()
        for idx in torch.randperm(len(x_tr), generator=gen).split(batch_size):
            if len(idx) < 2:
                continue
            loss = loss_fn(head(x_tr[idx]), y_tr[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if len(x_va):
            head.eval()
            with torch.no_grad():
                val_loss = float(loss_fn(head(x_va), y_va))
            history.append({"epoch": epoch, "val_loss": val_loss})
            if keep_best and (best is None or val_loss < best[0]):
                best = (val_loss, {k: v.clone() for k, v in head.state_dict().items()})
    if best is not None:
        head.load_state_dict(best[1])
    head.eval()
    return history
