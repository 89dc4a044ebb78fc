"""In-batch contrastive loss (InfoNCE, CLIP-style symmetric) for question/passage pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(queries: torch.Tensor, passages: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, D) normalized queries and their passages -> scalar loss; row i's positive is column i."""
    logits = queries @ passages.T / temperature  # (B, B)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate (B, D) from every worker, keeping gradients for the local slice."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)  # (W*B, D)


def contrastive_loss(queries: torch.Tensor, passages: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over the negatives of all workers (a bigger pool is a known win)."""
    return info_nce(gather_with_grad(queries), gather_with_grad(passages), temperature)
