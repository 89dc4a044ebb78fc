"""Self-annotation prompt for retrieval: the model writes one question its paragraph answers.

Small instruction models follow a worked example far better than an instruction alone, so the
prompt is one-shot: a made-up passage with its question, then the real passage.
"""

from __future__ import annotations

from skr_ray.config import PROMPT_STYLES

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


def kind_prompt_version(kind: str, style: str = "chat") -> str:
    if style == "fewshot":
        return f"ir-{kind}-v1-fewshot"
    return PROMPT_VERSION if kind == "question" else _KIND_PROMPTS[kind][0]


def kind_example(kind: str) -> str:
    return EXAMPLE_QUESTION if kind == "question" else _KIND_PROMPTS[kind][3]


def kind_examples(kind: str, style: str = "chat") -> tuple[str, ...]:
    """The labels a prompt of ``kind`` shows as examples: a near copy of one is filtered as 'echoes_example'."""
    if style == "fewshot":
        return tuple(label for _, label in _FEWSHOT[kind][1])
    return (kind_example(kind),)


# A pretrained base model (no chat habit, no chat template) continues text: the few-shot prompt is a document of
# passage/label records (InPars style) that ends where the next label belongs; the label is the completion up to
# the end of its line. The examples are hand-written here (no evaluation data), on other topics than each other
# so that no one subject leaks into every label.
FEWSHOT_STOP = "\n"
"""A few-shot label ends at its line's end: generation stops there and the rest is cut."""
_FEWSHOT_PASSAGES = (
    "Revenue for fiscal 2019 rose 12% to $1.24 billion, driven by higher subscription sales in North America.",
    "The company leases its headquarters in Austin, Texas, under an agreement that expires in 2027.",
    "Basic earnings per share were $2.31 in 2018, against $1.97 in 2017, on 412 million weighted shares.",
)
_FEWSHOT: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "question": ("Question", (
        (_FEWSHOT_PASSAGES[0], "How much did revenue grow in fiscal 2019?"),
        (_FEWSHOT_PASSAGES[1], "When does the lease of the headquarters in Austin expire?"),
        (_FEWSHOT_PASSAGES[2], "What were basic earnings per share in 2018?"),
    )),
    "keywords": ("Keywords", (
        (_FEWSHOT_PASSAGES[0], "fiscal 2019 revenue growth subscriptions"),
        (_FEWSHOT_PASSAGES[1], "headquarters lease Austin expiry"),
        (_FEWSHOT_PASSAGES[2], "basic earnings per share 2018"),
    )),
    "statement": ("Fact", (
        (_FEWSHOT_PASSAGES[0], "Subscription sales lifted revenue by 12% in fiscal 2019."),
        (_FEWSHOT_PASSAGES[1], "The Austin headquarters is leased until 2027."),
        (_FEWSHOT_PASSAGES[2], "Basic earnings per share rose from $1.97 to $2.31 between 2017 and 2018."),
    )),
}


def resolve_style(style: str, tokenizer: object) -> str:
    """``auto``: chat when the annotator's tokenizer has a chat template (an instruction model), else few-shot."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"annotate.prompt_style must be one of {PROMPT_STYLES}, got {style!r}")
    if style != "auto":
        return style
    return "chat" if getattr(tokenizer, "chat_template", None) else "fewshot"


def fewshot_opening(kind: str) -> str:
    """What every few-shot prompt of ``kind`` starts with: the worked records."""
    field, examples = _FEWSHOT[kind]
    return "".join(f"Passage: {passage}\n{field}: {label}\n\n" for passage, label in examples)


_FUNCTION_WORDS = frozenset(
    "what which who whom whose when where why how is are was were be been being do does did has have had the a an "
    "of in on at to for from by with and or not no as than that this these those its it their there per into over "
    "under between during about after before up down out more less much many".split())


def fewshot_avoid(text: str, kind: str) -> tuple[set[str], set[str]]:
    """(words the label must not use, words it may): a small base model copies the examples' labels (on
    Gemma-3-270M most labels were the last example's question). The examples' content words are off limits
    unless the passage itself has them; question and function words stay free."""
    import re

    example_words = {w for passage, label in _FEWSHOT[kind][1] for w in re.findall(r"[^\W\d_]+", passage + " " + label)}
    own = set(re.findall(r"[^\W\d_]+", text))
    free = own | _FUNCTION_WORDS | {w.capitalize() for w in _FUNCTION_WORDS}
    return {w for w in example_words if w.lower() not in {f.lower() for f in free}}, free


def fewshot_prompt(text: str, kind: str) -> str:
    """The records, then the passage and its label's field name: the model's next line is the label."""
    passage = " ".join(text.split())  # one line: a record's fields are lines
    return f"{fewshot_opening(kind)}Passage: {passage}\n{_FEWSHOT[kind][0]}:"


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
