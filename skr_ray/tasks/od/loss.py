"""OD's loss: L1 between normalized boxes."""

from __future__ import annotations

import torch


def box_l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between normalized boxes (the paper's OD loss)."""
    return torch.nn.functional.l1_loss(pred.float(), target.float())
