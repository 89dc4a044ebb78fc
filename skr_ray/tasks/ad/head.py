"""AD head: 3-layer MLP on the final-token state -> one logit (answerable).

The default ``input_norm="batch"`` standardizes the state first (see skr_ray.models.heads).
"""

from __future__ import annotations

import torch

from skr_ray.models.heads import MLPHead


class ClassifierHead(MLPHead):
    def __init__(self, hidden_size: int, hidden: int = 1024, dropout: float = 0.1, input_norm: str = "none") -> None:
        super().__init__(hidden_size, 1, hidden, dropout, input_norm)

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B,)
        return super().forward(states).squeeze(-1)


def make_head(hidden_size: int, options: dict) -> ClassifierHead:
    # Heads saved before input_norm existed have none.
    return ClassifierHead(hidden_size, int(options.get("hidden", 1024)), input_norm=options.get("input_norm", "none"))
