"""What the text path (``encoding``) and the vision-language path (``vision``) both use: the tokenizer of a
loaded tokenizer or processor, and last-token pooling."""

from __future__ import annotations

from typing import Any

import torch


def text_tokenizer(loaded: Any) -> Any:
    """The tokenizer inside a processor (vision-language backbones), or the tokenizer itself."""
    return loaded.tokenizer if hasattr(loaded, "image_processor") else loaded


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D), (B, T) -> (B, D): state of each row's last attended token (left or right padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # (T,)
    last = (attention_mask * positions).argmax(dim=1)  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
