"""AD head: 3-layer MLP on the final-token state -> one logit (answerable)."""

from __future__ import annotations

import torch
from torch import nn


class ClassifierHead(nn.Module):
    def __init__(self, hidden_size: int, hidden: int = 1024, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden_size, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B,)
        return self.net(states.float()).squeeze(-1)


def make_head(hidden_size: int, options: dict) -> ClassifierHead:
    return ClassifierHead(hidden_size, int(options.get("hidden", 1024)))
