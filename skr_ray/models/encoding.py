"""Tokenize for embedding and pool the last layer's states (no LM head): the final token's state by default,
or the mean over the input (``mean``) or over a repeated copy of it (``echo``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from skr_ray.models.common import last_token_pool, text_tokenizer


def tokenize_for_embedding(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int, append_eos: bool = True
) -> dict[str, torch.Tensor]:
    """Left-padded batch where every row ends in EOS, even after truncation.

    Ending each row on the same token gives the last-token state a consistent role ("the sequence is
    complete"), and left padding puts that token at index -1 for every row.
    """
    eos = tokenizer.eos_token_id
    limit = max_length - 1 if append_eos else max_length
    ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=limit)["input_ids"]
    rows = [row + [eos] if append_eos else row for row in ids]
    return pad_left(rows, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)


def pad_left(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Token rows as a left-padded batch: every row's last token at index -1."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


EMBED_PROMPTS = ("plain", "e5v")
# E5-V style prompt baseline: summarize the input in one word and read the last token's state.
E5V_TEMPLATE = "{text}\nSummarize the above in one word:"
POOLINGS = ("last_token", "mean", "echo")
# Echo embeddings (Springer et al. 2024): the text twice; in a causal model only the second copy's states
# have seen the whole text, so their mean is the embedding.
ECHO_OPEN, ECHO_AGAIN = "Rewrite the text: ", "\nThe same text again: "


def format_for_embedding(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int, prompt: str = "plain",
    pooling: str = "last_token",
) -> dict[str, torch.Tensor]:
    """Tokenize texts for embedding under an input format and pooling.

    plain: the text (truncated to ``max_length`` tokens) + EOS.
    e5v: the text (truncated to ``max_length`` tokens) inside a chat turn asking for a one-word
    summary; the last token is the start of the assistant's answer, where the model has gathered
    what it would say about the whole input.

    pooling ``mean`` adds a ``pool_mask`` (every attended token); ``echo`` replaces the format by the
    text twice (``ECHO_OPEN`` text ``ECHO_AGAIN`` text) with a ``pool_mask`` on the second copy.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; known: {POOLINGS}")
    if pooling == "echo":
        return _echo_batch(tokenizer, texts, max_length)
    batch = _prompted(tokenizer, texts, max_length, prompt)
    if pooling == "mean":
        batch["pool_mask"] = batch["attention_mask"].clone()
    return batch


def _echo_batch(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    opening = tokenizer(ECHO_OPEN, add_special_tokens=False)["input_ids"]
    again = tokenizer(ECHO_AGAIN, add_special_tokens=False)["input_ids"]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batch = pad_left([opening + row + again + row for row in ids], pad)
    pool = torch.zeros_like(batch["attention_mask"])
    for i, row in enumerate(ids):
        pool[i, pool.shape[1] - max(len(row), 1) :] = 1  # left padding: the second copy ends the row
    batch["pool_mask"] = pool
    return batch


def _prompted(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int, prompt: str
) -> dict[str, torch.Tensor]:
    if prompt == "plain":
        return tokenize_for_embedding(tokenizer, texts, max_length)
    if prompt != "e5v":
        raise ValueError(f"unknown embedding prompt {prompt!r}; known: {EMBED_PROMPTS}")
    ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    wrapped = []
    for row in ids:
        content = E5V_TEMPLATE.format(text=tokenizer.decode(row))
        if tokenizer.chat_template:
            content = tokenizer.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
            )
        wrapped.append(content)
    return tokenize_for_embedding(tokenizer, wrapped, max_length + 64, append_eos=False)


def decoder_body(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer stack without the LM head (works through PEFT and DeepSpeed wrappers)."""
    inner = getattr(model, "module", model)  # DeepSpeed engine
    if hasattr(inner, "get_base_model"):  # PEFT
        inner = inner.get_base_model()
    if hasattr(inner, "get_decoder"):
        body = inner.get_decoder()
        if body is not None:
            return body
    return inner.model


def pool_states(hidden: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, D) -> (B, D): the mean of the states under ``pool_mask``, or without one the last token's state."""
    if pool_mask is None:
        return last_token_pool(hidden, attention_mask)
    weights = (pool_mask * attention_mask).to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def final_token_states(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, D) pooled last-layer states: the final token's, or the mean under ``batch["pool_mask"]``."""
    body = decoder_body(model)
    out = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    return pool_states(out.last_hidden_state, batch["attention_mask"], batch.get("pool_mask"))


FORWARD_OVERHEAD_TOKENS = 64
"""What one extra forward pass costs on top of its tokens, in tokens (per-call work that does not scale with the
batch: Python over every layer, small-matrix inefficiency). Sets how eagerly ``length_groups`` splits a batch."""


def length_groups(lengths: list[int], overhead: int = FORWARD_OVERHEAD_TOKENS) -> list[list[int]]:
    """Row indices of a batch cut into forward passes of similar length, cheapest first to last.

    A left-padded batch costs ``rows x longest row`` tokens; cut into groups of neighbouring lengths it costs
    the sum of each group's, plus ``overhead`` tokens per extra pass. Exact over the sorted lengths (dynamic
    programming, O(n^2): a served or encoded batch has tens of rows).
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest cover of the j shortest rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        for i in range(j):  # rows i..j-1 (sorted) in one pass, padded to the longest of them
            cost = best[i] + (j - i) * longest + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def split_batch(batch: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    """The given rows of a left-padded batch, with the columns that are padding in all of them cut off."""
    index = torch.tensor(rows, dtype=torch.long)
    width = int(batch["attention_mask"][index].sum(dim=1).max())
    return {k: v[index][:, v.shape[1] - width :] for k, v in batch.items()}


def states_by_length(states_of: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                     batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``states_of(batch)`` (rows -> (B, D)) computed as passes over rows of similar length (:func:`length_groups`),
    the rows back in the batch's order; one pass over the batch as it is when no cut pays. Differentiable."""
    groups = length_groups(batch["attention_mask"].sum(dim=1).tolist())
    if len(groups) <= 1:
        return states_of(batch)
    parts = torch.cat([states_of(split_batch(batch, rows)) for rows in groups])  # (B, D), grouped order
    flat = torch.tensor([i for rows in groups for i in rows], device=parts.device)
    return parts[torch.argsort(flat)]  # (B, D), the batch's order


@torch.inference_mode()
def embed_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    max_length: int,
    head: torch.nn.Module | None = None,
    device: str | torch.device = "cpu",
    prompt: str = "plain",
    pooling: str = "last_token",
    group_by_length: bool = False,
) -> torch.Tensor:
    """(N, D) float32 embeddings for one batch of texts (of a vision-language backbone too: text only).

    ``group_by_length``: run the batch as forward passes over rows of similar length (:func:`length_groups`)
    instead of one pass padded to its longest row: same embeddings, fewer padded tokens computed.
    """
    tokens = format_for_embedding(text_tokenizer(tokenizer), texts, max_length, prompt, pooling)
    def states_of(part: dict[str, torch.Tensor]) -> torch.Tensor:
        return final_token_states(model, {k: v.to(device) for k, v in part.items()}).float()  # (b, D)

    states = states_by_length(states_of, tokens) if group_by_length else states_of(tokens)
    return head(states) if head is not None else states
