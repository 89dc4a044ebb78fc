"""Self-annotation prompt for retrieval: the model writes one question its paragraph answers.

Small instruction models follow a worked example far better than an instruction alone, so the
prompt is one-shot: a made-up passage with its question, then the real passage.
"""

from __future__ import annotations

PROMPT_VERSION = "ir-question-v3-oneshot"

_SYSTEM = "You write one search question for a passage from a company report."
_ASK = "Passage:\n{text}\n\nWrite one question this passage answers."
_EXAMPLE_PASSAGE = (
    "Cash and cash equivalents at 31 December 2018 were $412.6 million, compared with $388.1 million "
    "a year earlier, mainly because of higher operating cash flow."
)
EXAMPLE_QUESTION = "What were cash and cash equivalents at 31 December 2018?"


def build_messages(text: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": _SYSTEM},
        {"role": "user", "content": _ASK.format(text=_EXAMPLE_PASSAGE)},
        {"role": "assistant", "content": EXAMPLE_QUESTION},
        {"role": "user", "content": _ASK.format(text=text)},
    ]


# Further kinds of self-written queries (``annotate.label_kinds``): a mix of query forms teaches the
# embedding more than any single one (Tamber et al. 2025). Their worked example uses a passage on another
# topic than the question's: with a cash example, SmolLM2-135M wrote "cash and cash equivalents ..." as the
# keyword query of most passages.
_OTHER_PASSAGE = (
    "The Group employed 4,210 people at year end, of whom 1,020 worked in research and development."
)
EXAMPLE_KEYWORDS = "employees research and development headcount"
EXAMPLE_STATEMENT = "About a quarter of the Group's 4,210 employees work in research and development."
_KIND_PROMPTS = {
    "keywords": (
        "ir-keywords-v2-oneshot",
        "You write one short keyword search query for a passage from a company report.",
        "Passage:\n{text}\n\nWrite a keyword search query (3 to 8 words) that should find this passage.",
        EXAMPLE_KEYWORDS,
    ),
    "statement": (
        "ir-statement-v2-oneshot",
        "You write one sentence stating a fact from a passage of a company report.",
        "Passage:\n{text}\n\nWrite one sentence, in your own words, stating a fact this passage supports.",
        EXAMPLE_STATEMENT,
    ),
}


def kind_prompt_version(kind: str) -> str:
    return PROMPT_VERSION if kind == "question" else _KIND_PROMPTS[kind][0]


def kind_example(kind: str) -> str:
    return EXAMPLE_QUESTION if kind == "question" else _KIND_PROMPTS[kind][3]


def build_kind_messages(text: str, kind: str) -> list[dict[str, str]]:
    """The one-shot chat asking for one label of ``kind`` (question | keywords | statement)."""
    if kind == "question":
        return build_messages(text)
    _, system, ask, example = _KIND_PROMPTS[kind]
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": ask.format(text=_OTHER_PASSAGE)},
        {"role": "assistant", "content": example},
        {"role": "user", "content": ask.format(text=text)},
    ]



# Image documents (charts, pages): the model writes one question the image answers, from the image alone.
IMAGE_PROMPT_VERSION = "ir-image-question-v1"
IMAGE_ASK = "Write one question that this image answers."
