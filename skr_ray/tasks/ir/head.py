"""IR head: the final-token state itself (SKR), or a trainable projection (head-only baseline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingHead(nn.Module):
    """L2-normalized embedding; ``projection=True`` adds a linear map initialised to the identity.

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


def make_head(hidden_size: int, options: dict) -> EmbeddingHead:
    return EmbeddingHead(hidden_size, projection=bool(options.get("projection", False)))
