"""Reading a yes/no answer out of the base model: its generated text and its first-token logits."""

from __future__ import annotations

import re

import torch

_FIRST_WORD = re.compile(r"[a-z]+")
_ECHO = re.compile(r"^\W*(yes|no)\W*(or|/)\W*(yes|no)\b")  # "yes or no" repeats the instruction
_YES = {"yes", "y", "true", "correct", "answerable"}
_NO = {"no", "n", "false", "not", "unanswerable", "cannot", "can't", "cant"}
_VARIANTS = ("yes", "Yes", "YES", " yes", " Yes", "no", "No", "NO", " no", " No")


_CLAUSE_NO = re.compile(r"\b(cannot|can't|can ?not|could not|is not|isn't) (be )?(answered|answerable|determined|found)")
_CLAUSE_YES = re.compile(r"\b(can|could) be (answered|determined|found)|\bis answerable")


def _clause_verdict(text: str) -> int | None:
    """Verdict stated in words after the first one ('... the question can be answered ...')."""
    no, yes = bool(_CLAUSE_NO.search(text)), bool(_CLAUSE_YES.search(text))
    if no == yes:
        return None
    return 1 if yes else 0


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
    if word in _YES or word in _NO:
        verdict = 1 if word in _YES else 0
        # "No, the question can be answered from the passage": the words contradict the verdict token.
        clause = _clause_verdict(text[match.end():])
        if clause is not None and clause != verdict:
            return None, "contradictory"
        return verdict, "ok"
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
