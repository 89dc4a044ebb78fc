"""Turn raw generations into clean questions, with every rejection counted by reason."""

from __future__ import annotations

import re
from dataclasses import dataclass

OK = "ok"
_PREFIX = re.compile(r"^\s*(?:question\s*\d*\s*[:.)-]|q\s*\d*\s*[:.)-]|\d+\s*[.)]|[-*•])\s*", re.I)
# Questions about the prompt itself rather than the passage's content carry no retrieval signal.
_GENERIC = re.compile(r"\b(this|the|above|given|following) (passage|text|question|paragraph)\b|answer to this", re.I)
_WORD = re.compile(r"[a-z0-9]+(?:[.,'][a-z0-9]+)*")


@dataclass(frozen=True)
class QuestionFilter:
    min_words: int = 4
    max_words: int = 40
    max_copy_ratio: float = 0.8
    require_question_mark: bool = True
    echo_of: tuple[str, ...] = ()
    """Questions from the prompt's worked example; a near copy of one is filtered as 'echoes_example'."""
    max_echo_similarity: float = 0.6


def clean_question(raw: str) -> str:
    """First non-empty line, chat/special markers and list prefixes removed, cut after the first '?'."""
    text = raw.split("<|im_end|>")[0].split("<|endoftext|>")[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return ""
    line = lines[0]
    for _ in range(2):
        line = _PREFIX.sub("", line).strip()
    line = line.strip("\"'`“”‘’ ").strip()
    if "?" in line:
        line = line[: line.index("?") + 1]
    return re.sub(r"\s+", " ", line)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def copy_ratio(question: str, source: str, n: int = 5) -> float:
    """Share of the question's word n-grams that appear verbatim in the source (0 for short ones)."""
    q = words(question)
    if len(q) < n:
        return 0.0
    src = words(source)
    src_grams = {tuple(src[i : i + n]) for i in range(len(src) - n + 1)}
    grams = [tuple(q[i : i + n]) for i in range(len(q) - n + 1)]
    return sum(g in src_grams for g in grams) / len(grams)


def parse_question(raw: str, source: str, flt: QuestionFilter = QuestionFilter()) -> tuple[str, str]:
    """Return (question, status). Status is 'ok' or the first reason the question was rejected."""
    question = clean_question(raw or "")
    if not question:
        return "", "empty"
    if flt.require_question_mark and not question.endswith("?"):
        return question, "not_a_question"
    n_words = len(words(question))
    if n_words < flt.min_words:
        return question, "too_short"
    if n_words > flt.max_words:
        return question, "too_long"
    if _GENERIC.search(question):
        return question, "generic"
    qset = set(words(question))
    for example in flt.echo_of:
        eset = set(words(example))
        if len(qset & eset) / max(1, len(qset | eset)) >= flt.max_echo_similarity:
            return question, "echoes_example"
    if copy_ratio(question, source) > flt.max_copy_ratio:
        return question, "copies_passage"
    return question, OK


def normalize_for_dedup(question: str) -> str:
    return " ".join(words(question))


def kind_filter(kind: str, base: QuestionFilter, style: str = "chat") -> QuestionFilter:
    """The filter of one label kind: a keyword query is short and has no question mark, a statement is a
    sentence; each is checked against its own prompt's examples (``style``: chat or fewshot)."""
    from dataclasses import replace

    from skr_ray.tasks.ir.prompts import kind_examples

    echo_of = kind_examples(kind, style)
    if kind == "question":
        return replace(base, echo_of=echo_of)
    if kind == "keywords":
        # a keyword query made of the passage's own words is what a searcher types: no copy filter
        return replace(base, min_words=2, max_words=12, require_question_mark=False, max_copy_ratio=1.0,
                       echo_of=echo_of)
    return replace(base, require_question_mark=False, echo_of=echo_of)


def parse_label(raw: str, source: str, flt: QuestionFilter, kind: str = "question") -> tuple[str, str]:
    """(label, status) for a generation of ``kind``; the filter is ``kind_filter(kind, ...)``."""
    label, status = parse_question(raw, source, flt)
    if kind == "keywords":
        label = label.rstrip("?.!").strip()
    elif kind == "statement" and status == OK and label.endswith("?"):
        status = "not_a_statement"
    return label, status
