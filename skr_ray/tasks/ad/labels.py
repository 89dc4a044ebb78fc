"""Reading a yes/no answer out of the base model: its generated text and its first-token logits."""

from __future__ import annotations

import re

import torch

_FIRST_WORD = re.compile(r"[a-z]+")
_ECHO = re.compile(r"^\W*(yes|no)\W*(or|/)\W*(yes|no)\b")  # "yes or no" repeats the instruction
_YES = {"yes", "y", "true", "correct", "answerable"}
_NO = {"no", "n", "false", "not", "unanswerable", "cannot", "can't", "cant"}
_VARIANTS = ("yes", "Yes", "YES", " yes", " Yes", "no", "No", "NO", " no", " No")


def parse_yes_no(raw: str) -> tuple[int | None, str]:
    """Model text -> (1 | 0 | None, status). Case, punctuation and trailing reasons are ignored.

    'Yes, because ...' -> 1; '**No.**' -> 0; 'The passage says ...' -> (None, 'unparseable').
    """
    text = (raw or "").strip().lower()
    if not text:
        return None, "empty"
    if _ECHO.match(text):
        return None, "unparseable"
    match = _FIRST_WORD.search(text)
    if match is None:
        return None, "unparseable"
    word = match.group(0)
    if word in _YES:
        return 1, "ok"
    if word in _NO:
        return 0, "ok"
    # "The answer is yes." / "Answer: no" — one verdict word anywhere in a short answer.
    words = set(_FIRST_WORD.findall(text))
    has_yes, has_no = bool(words & {"yes"}), bool(words & {"no", "not", "cannot"})
    if has_yes != has_no:
        return (1 if has_yes else 0), "ok"
    return None, "unparseable"


def yes_no_token_ids(tokenizer) -> tuple[list[int], list[int]]:
    """First-token ids of the spellings of 'yes' and 'no' the model might start its answer with."""
    yes, no = set(), set()
    for v in _VARIANTS:
        ids = tokenizer(v, add_special_tokens=False)["input_ids"]
        if ids:
            (yes if v.strip().lower() == "yes" else no).add(ids[0])
    overlap = yes & no
    yes, no = sorted(yes - overlap), sorted(no - overlap)
    if not yes or not no:
        raise ValueError("the tokenizer has no distinct first token for 'yes' and 'no'")
    return yes, no


def yes_probability(logits: torch.Tensor, yes_ids: list[int], no_ids: list[int]) -> torch.Tensor:
    """(B, V) next-token logits -> (B,) softmax probability of 'yes' against 'no' (all spellings)."""
    logits = logits.float()
    yes = torch.logsumexp(logits[:, yes_ids], dim=-1)
    no = torch.logsumexp(logits[:, no_ids], dim=-1)
    return torch.sigmoid(yes - no)
