"""SFT baseline head: the model's own (frozen) LM head, so LoRA learns to *say* yes/no (NTP objective)."""

from __future__ import annotations

import torch
from torch import nn


class LMHeadScorer(nn.Module):
    """(B, D) final-token states -> (B, V) next-token logits through the backbone's LM head.

    The LM head is held by reference, not registered: it stays part of the backbone (frozen, tied
    to the embeddings) and is not saved again with the head.
    """

    objective = "sft"

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        inner = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
        self._lm_head = [inner.get_output_embeddings()]

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        lm_head = self._lm_head[0]
        return lm_head(states.to(lm_head.weight.dtype)).float()


def answer_token_ids(tokenizer) -> tuple[int, int]:
    """First tokens of the answers 'Yes' and 'No' as the assistant turn would start them."""
    yes = tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
    no = tokenizer("No", add_special_tokens=False)["input_ids"][0]
    if yes == no:
        raise ValueError("the tokenizer has no distinct first token for 'Yes' and 'No'")
    return yes, no
