"""OD head: 3-layer MLP on the final-token state -> 4 sigmoid outputs, a normalized box (x0, y0, x1, y1).

The two x outputs and the two y outputs are put in order, so every output is a valid box.
"""

from __future__ import annotations

import torch

from skr_ray.models.heads import MLPHead


class BoxHead(MLPHead):
    def __init__(self, hidden_size: int, hidden: int = 1024, dropout: float = 0.1, input_norm: str = "none") -> None:
        super().__init__(hidden_size, 4, hidden, dropout, input_norm)

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, 4) in [0, 1]
        p = torch.sigmoid(super().forward(states))
        xs, ys = p[:, 0::2], p[:, 1::2]  # (x_a, x_b), (y_a, y_b)
        return torch.stack([xs.min(1).values, ys.min(1).values, xs.max(1).values, ys.max(1).values], dim=1)


def make_head(hidden_size: int, options: dict) -> BoxHead:
    return BoxHead(hidden_size, int(options.get("hidden", 1024)), input_norm=options.get("input_norm", "none"))


def box_l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between normalized boxes (the paper's OD loss)."""
    return torch.nn.functional.l1_loss(pred.float(), target.float())
