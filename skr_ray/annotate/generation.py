"""Batched, left-padded chat generation with the base model's own LM head.

Every prompt of a self-annotation batch opens the same way (system turn, worked example). With a shared
opening the engine runs it through the model once, keeps its KV cache, and starts each batch from a copy:
rows are laid out as ``opening | padding | own turn`` with the padding masked, so positions (taken from
the attention mask) and greedy outputs are those of the plain left-padded batch, at the cost of only the
rows' own tokens.
"""

from __future__ import annotations

import copy
import logging

import torch
from transformers import (LogitsProcessor, LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase,
                          StoppingCriteria, StoppingCriteriaList)

log = logging.getLogger(__name__)

_STOP_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>")


class _TokenStop(StoppingCriteria):
    """A row is done once it generates one of the ``stops`` tokens after some text (leading blank lines are
    skipped); transformers pads the finished rows after that. ``blank``: tokens of whitespace only."""

    def __init__(self, stops: torch.Tensor, blank: torch.Tensor) -> None:
        self.stops, self.blank = stops, blank
        self.started: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
        last = input_ids[:, -1]
        if self.started is None or len(self.started) != len(last):
            self.started = torch.zeros(len(last), dtype=torch.bool, device=last.device)
        done = torch.isin(last, self.stops.to(last.device)) & self.started
        self.started |= ~torch.isin(last, self.blank.to(last.device))
        return done


class _AvoidTokens(LogitsProcessor):
    """Row i never generates the tokens ``banned[i]`` (after generate() repeats rows: ``copies`` per prompt)."""

    def __init__(self, banned: list[torch.Tensor], copies: int) -> None:
        self.banned = [b for b in banned for _ in range(copies)]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for i, ids in enumerate(self.banned):
            if len(ids):
                scores[i, ids.to(scores.device)] = -float("inf")
        return scores


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
        config = getattr(model, "config", None)
        text = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
        self.context = int(getattr(text, "max_position_embeddings", 0) or 0)  # 0 = unknown: never too long
        self._openings: dict[tuple[int, ...], object] = {}  # opening tokens -> its KV cache (batch of one)
        self.opening_fallbacks = 0  # batches whose prompts did not start with the given opening
        self._stops: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def truncate(self, text: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_input_tokens:
            return text
        return self.tokenizer.decode(ids[: self.max_input_tokens])

    def too_long(self, prompts: list[str]) -> list[bool]:
        """Prompts that leave no room for ``max_new_tokens`` in the model's context."""
        if not self.context:
            return [False] * len(prompts)
        lengths = [len(ids) for ids in self.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        return [n + self.max_new_tokens > self.context for n in lengths]

    def render(self, messages: list[dict[str, str]]) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n"

    def render_opening(self, messages: list[dict[str, str]]) -> str:
        """The text every prompt ``render(messages[:-1] + [own turn])`` starts with: all turns but the last."""
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=False)
        return "".join(m["content"] + "\n\n" for m in messages[:-1])

    def _opening_cache(self, opening: tuple[int, ...]) -> object:
        if opening not in self._openings:
            ids = torch.tensor([opening], device=self.device)
            out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
            self._openings[opening] = out.past_key_values
        return self._openings[opening]

    def _with_opening(self, rows: list[list[int]], opening: str, copies: int) -> dict | None:
        """Inputs for generate() that start from the opening's cached KV, or None when a row does not start
        with the opening's tokens (then the plain batch is used)."""
        head = self.tokenizer(opening, add_special_tokens=False)["input_ids"]
        n = len(head)
        if not head or any(len(r) <= n or r[:n] != head for r in rows):
            self.opening_fallbacks += 1
            return None
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        width = max(len(r) for r in rows) - n
        ids = torch.full((len(rows), n + width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        ids[:, :n] = torch.tensor(head)
        mask[:, :n] = 1
        for i, r in enumerate(rows):
            own = r[n:]
            ids[i, n + width - len(own) :] = torch.tensor(own)
            mask[i, n + width - len(own) :] = 1
        cache = copy.deepcopy(self._opening_cache(tuple(head)))
        cache.batch_repeat_interleave(len(rows) * copies)  # generate() repeats the rows, not the cache
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device), "past_key_values": cache}

    def _token_ids(self, words: set[str]) -> set[int]:
        """Every token of each word as it may appear: alone or after a space, as written, lower-case, capitalized."""
        forms = {f for w in words for v in (w, w.lower(), w.capitalize()) for f in (v, " " + v)}
        ids: set[int] = set()
        if not forms:
            return ids
        for row in self.tokenizer(sorted(forms), add_special_tokens=False)["input_ids"]:
            ids.update(row)
        return ids

    def _stop_criterion(self, stop: str) -> "_TokenStop":
        """Stops at the tokens whose text contains ``stop`` (for a line end: every token holding a newline), found
        once per engine by decoding the vocabulary."""
        if stop not in self._stops:
            texts = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))], skip_special_tokens=False)
            pad = self.tokenizer.pad_token_id
            self._stops[stop] = (torch.tensor([i for i, t in enumerate(texts) if stop in t], dtype=torch.long),
                                 torch.tensor([i for i, t in enumerate(texts) if not t.strip() or i == pad],
                                              dtype=torch.long))
        return _TokenStop(*self._stops[stop])

    @torch.inference_mode()
    def generate(
        self,
        prompts: list[str],
        num_return_sequences: int = 1,
        temperature: float = 0.0,
        seed: int = 0,
        opening: str | None = None,
        stop: str | None = None,
        avoid: list[tuple[set[str], set[str]]] | None = None,
    ) -> list[list[str]]:
        """Completions per prompt; greedy when temperature == 0, else seeded sampling.

        ``opening`` (``render_opening``): the prompts' common start, computed once and reused from its KV cache.
        ``stop``: a completion ends at its first occurrence (generation stops there too; few-shot prompts).
        ``avoid``: per prompt, (words whose tokens the completion must not use, words whose tokens stay allowed):
        a few-shot prompt forbids its examples' content unless the row's own passage has it (no echo).
        """
        if not prompts:
            return []
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # cut padding
        batch = None
        if opening:
            rows = self.tokenizer([prompts[i] for i in order], add_special_tokens=False)["input_ids"]
            batch = self._with_opening(rows, opening, num_return_sequences)
        if batch is None:
            batch = self.tokenizer(
                [prompts[i] for i in order], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
        kwargs: dict = {
            "max_new_tokens": self.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
            "num_return_sequences": num_return_sequences,
        }
        if avoid:
            banned = [self._token_ids(avoid[i][0]) - self._token_ids(avoid[i][1]) for i in order]
            kwargs["logits_processor"] = LogitsProcessorList(
                [_AvoidTokens([torch.tensor(sorted(b), dtype=torch.long) for b in banned], num_return_sequences)])
        if stop:
            kwargs["stopping_criteria"] = StoppingCriteriaList([self._stop_criterion(stop)])
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
            text = text.replace(self.tokenizer.pad_token or "\0", "")
            if stop:  # the first line with text on it
                text = text.lstrip().split(stop)[0]
            results[order[j // num_return_sequences]].append(text.strip())
        return results
