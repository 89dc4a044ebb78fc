"""Batched, left-padded chat generation with the base model's own LM head."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

_STOP_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>")


class GenerationEngine:
    """Turns chat messages into completions; inputs are truncated by tokens, never dropped."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_input_tokens: int,
        max_new_tokens: int,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_input_tokens = max_input_tokens
        self.max_new_tokens = max_new_tokens
        self.device = device

    def truncate(self, text: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_input_tokens:
            return text
        return self.tokenizer.decode(ids[: self.max_input_tokens])

    def render(self, messages: list[dict[str, str]]) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n"

    @torch.inference_mode()
    def generate(
        self,
        prompts: list[str],
        num_return_sequences: int = 1,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> list[list[str]]:
        """Completions per prompt; greedy when temperature == 0, else seeded sampling."""
        if not prompts:
            return []
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # cut padding
        batch = self.tokenizer(
            [prompts[i] for i in order], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        kwargs: dict = {
            "max_new_tokens": self.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
            "num_return_sequences": num_return_sequences,
        }
        if temperature > 0:
            torch.manual_seed(seed)
            kwargs.update(do_sample=True, temperature=temperature, top_p=0.95)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        out = self.model.generate(**batch, **kwargs)  # (B*n, T_in + T_new)
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=False)
        results: list[list[str]] = [[] for _ in prompts]
        for j, text in enumerate(texts):
            for marker in _STOP_MARKERS:
                text = text.split(marker)[0]
            pad = self.tokenizer.pad_token
            results[order[j // num_return_sequences]].append(text.replace(pad or "\0", "").strip())
        return results
