"""IR head: the final-token state itself (SKR), or a trainable projection (head-only baseline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingHead(nn.Module):
    """L2-normalized embedding; ``projection=True`` adds a linear map initialised to the identity."""

    def __init__(self, hidden_size: int, projection: bool = False) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.proj: nn.Module = nn.Linear(hidden_size, hidden_size) if projection else nn.Identity()
        if projection:
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(hidden_size))
                self.proj.bias.zero_()

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, D)
        return F.normalize(self.proj(states.float()), dim=-1)


def make_head(hidden_size: int, options: dict) -> EmbeddingHead:
    return EmbeddingHead(hidden_size, projection=bool(options.get("projection", False)))
