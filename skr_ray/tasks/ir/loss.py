"""In-batch contrastive loss (InfoNCE, CLIP-style symmetric) for question/passage pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(queries: torch.Tensor, passages: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, D) normalized queries and their passages -> scalar loss; row i's positive is column i."""
    return masked_info_nce(queries, passages, temperature)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate (B, D) from every worker, keeping gradients for the local slice."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)  # (W*B, D)


def masked_info_nce(
    queries: torch.Tensor,
    passages: torch.Tensor,
    temperature: float,
    negatives: torch.Tensor | None = None,
    docs: torch.Tensor | None = None,
    negative_docs: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE of (B, D) queries against their passages, plus (M, D) extra ``negatives`` as columns of the
    query side. With ``docs`` (B,) and ``negative_docs`` (M,) doc keys, a column holding a query's own
    document (another query's copy of its passage, or a mined negative that is another query's positive)
    is masked out instead of counted as a negative."""
    columns = passages if negatives is None else torch.cat([passages, negatives])
    logits = queries @ columns.T / temperature  # (B, B + M)
    labels = torch.arange(queries.shape[0], device=queries.device)
    if docs is not None:
        col_docs = docs if negatives is None else torch.cat([docs, negative_docs])
        same = docs[:, None] == col_docs[None, :]  # (B, B + M)
        same[labels, labels] = False
        logits = logits.masked_fill(same, float("-inf"))
    q_side = F.cross_entropy(logits, labels)
    p_side = F.cross_entropy(logits[:, : passages.shape[0]].T, labels)  # passage -> its query, among queries
    return 0.5 * (q_side + p_side)


def contrastive_loss(
    queries: torch.Tensor,
    passages: torch.Tensor,
    temperature: float,
    negatives: torch.Tensor | None = None,
    docs: torch.Tensor | None = None,
    negative_docs: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE over the in-batch negatives of all workers (a bigger pool is a known win), plus this worker's
    mined hard negatives (their number may differ between workers, so they are not gathered)."""
    return masked_info_nce(
        gather_with_grad(queries), gather_with_grad(passages), temperature, negatives,
        None if docs is None else _gather_keys(docs), negative_docs,
    )


def _gather_keys(keys: torch.Tensor) -> torch.Tensor:
    """(N,) int64 keys from every worker (sizes may differ: mined negatives per worker vary)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return keys
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, keys.cpu())
    return torch.cat(out).to(keys.device)
