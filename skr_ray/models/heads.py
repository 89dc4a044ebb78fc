"""The task heads' shared body: a 3-layer MLP on the final-token state, optionally standardized first.

``input_norm="batch"`` standardizes the state per feature (BatchNorm without affine terms). A decoder's
final-token states share one large common component (SmolLM2-135M: norm ~54, per-feature std < 1 across
inputs); the MLP has to pick its signal out of the small variations around it. Standardizing them is
what lets a head learn on a few hundred self-labels (see docs/tasks/ad.md).

The tasks' heads live here too (IR's embedding head; AD's classifier and OD's box head on the MLP body), with
:data:`TASK_HEADS`, each task's head by the name a checkpoint's ``head.json`` gives: a checkpoint loads without
the task code (``skr_ray.models.checkpoint.load_skr_model``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from collections.abc import Callable
from typing import Any

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


class EmbeddingHead(nn.Module):
    """IR: the final-token state itself, L2-normalized (SKR); ``projection=True`` adds a linear map initialised
    to the identity (the head-only baseline).

    The projection reads the L2-normalized state, as the head-only baseline is trained on normalized frozen
    embeddings: a head fitted there (SKR's probe start, ``train.head_init=probe``) computes the same embedding
    on SKR's raw states. On an already normalized input the extra normalization changes nothing."""

    def __init__(self, hidden_size: int, projection: bool = False) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.proj: nn.Module = nn.Linear(hidden_size, hidden_size) if projection else nn.Identity()
        if projection:
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(hidden_size))
                self.proj.bias.zero_()

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, D)
        states = states.float()
        if isinstance(self.proj, nn.Linear):
            states = F.normalize(states, dim=-1)
        return F.normalize(self.proj(states), dim=-1)


def make_embedding_head(hidden_size: int, options: dict) -> EmbeddingHead:
    return EmbeddingHead(hidden_size, projection=bool(options.get("projection", False)))


class ClassifierHead(MLPHead):
    """AD: the MLP on the final-token state -> one logit (answerable). AD's default ``input_norm="batch"``
    standardizes the state first."""

    def __init__(self, hidden_size: int, hidden: int = 1024, dropout: float = 0.1, input_norm: str = "none") -> None:
        super().__init__(hidden_size, 1, hidden, dropout, input_norm)

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B,)
        return super().forward(states).squeeze(-1)


def make_classifier_head(hidden_size: int, options: dict) -> ClassifierHead:
    # Heads saved before input_norm existed have none.
    return ClassifierHead(hidden_size, int(options.get("hidden", 1024)), input_norm=options.get("input_norm", "none"))


class BoxHead(MLPHead):
    """OD: the MLP on the final-token state -> 4 sigmoid outputs, a normalized box (x0, y0, x1, y1).

    The two x outputs and the two y outputs are put in order, so every output is a valid box."""

    def __init__(self, hidden_size: int, hidden: int = 1024, dropout: float = 0.1, input_norm: str = "none") -> None:
        super().__init__(hidden_size, 4, hidden, dropout, input_norm)

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, 4) in [0, 1]
        p = torch.sigmoid(super().forward(states))
        xs, ys = p[:, 0::2], p[:, 1::2]  # (x_a, x_b), (y_a, y_b)
        return torch.stack([xs.min(1).values, ys.min(1).values, xs.max(1).values, ys.max(1).values], dim=1)


def make_box_head(hidden_size: int, options: dict) -> BoxHead:
    return BoxHead(hidden_size, int(options.get("hidden", 1024)), input_norm=options.get("input_norm", "none"))


TASK_HEADS: dict[str, Callable[[int, dict[str, Any]], nn.Module]] = {
    "ir": make_embedding_head,
    "ad": make_classifier_head,
    "od": make_box_head,
}
"""(hidden_size, head options) -> head module, by task name (each task registers its entry as ``make_head``)."""


def make_task_head(task: str, hidden_size: int, options: dict[str, Any]) -> nn.Module:
    """The head of a checkpoint whose ``head.json`` names ``task``."""
    try:
        make = TASK_HEADS[task]
    except KeyError:
        raise KeyError(f"unknown task {task!r}; known heads: {sorted(TASK_HEADS)}") from None
    return make(hidden_size, options)


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
