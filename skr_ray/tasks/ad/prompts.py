"""AD prompt: the base model judges, through its normal generation, whether a passage answers a question.

The same chat prompt is the input of every AD system (base NTP, SFT, head-only, SKR), so they differ
only in how the answer is read out: generated text, LM-head logits, or a trained head.
"""

from __future__ import annotations

PROMPT_VERSION = "ad-answerable-v1"

_SYSTEM = "You check whether a passage from a company report contains the answer to a question."
_ASK = (
    "Passage:\n{passage}\n\nQuestion: {query}\n\n"
    "Can the question be answered from the passage alone? Answer yes or no."
)


def build_messages(query: str, passage: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": _SYSTEM},
        {"role": "user", "content": _ASK.format(passage=passage, query=query)},
    ]


# A base model (no chat template) reads the same ask as records it continues: two worked pairs, one answered
# and one on-topic but unanswered (hand-written, no evaluation data), then the pair with "Answer:" open.
FEWSHOT_PROMPT_VERSION = "ad-answerable-v1-fewshot"
_FEWSHOT_ASK = "Passage: {passage}\nQuestion: {query}\nCan the question be answered from the passage alone?\nAnswer:"
_FEWSHOT_EXAMPLES = (
    ("The company leases its headquarters in Austin, Texas, under an agreement that expires in 2027.",
     "When does the lease of the Austin headquarters expire?", "yes"),
    ("Revenue for fiscal 2019 rose 12% to $1.24 billion, driven by higher subscription sales in North America.",
     "How much did revenue from Europe grow in fiscal 2019?", "no"),
)


def fewshot_style(tokenizer) -> bool:
    """A base model's tokenizer (no chat template): the AD prompt is the few-shot records."""
    return not getattr(tokenizer, "chat_template", None)


def prompt_version(tokenizer) -> str:
    return FEWSHOT_PROMPT_VERSION if fewshot_style(tokenizer) else PROMPT_VERSION


def _fewshot_opening() -> str:
    return "".join(_FEWSHOT_ASK.format(passage=p, query=q) + f" {a}\n\n" for p, q, a in _FEWSHOT_EXAMPLES)


def render_prompts(tokenizer, queries: list[str], passages: list[str], max_passage_tokens: int) -> list[str]:
    """Chat-rendered prompts ending where the assistant's answer starts (a base model: few-shot records ending
    with "Answer:"); passages cut by tokens."""
    ids = tokenizer(list(passages), add_special_tokens=False, truncation=True, max_length=max_passage_tokens)
    out = []
    for query, row in zip(queries, ids["input_ids"]):
        passage = tokenizer.decode(row)
        if fewshot_style(tokenizer):
            out.append(_fewshot_opening() + _FEWSHOT_ASK.format(passage=" ".join(passage.split()), query=query))
        else:
            out.append(tokenizer.apply_chat_template(build_messages(query, passage), tokenize=False,
                                                     add_generation_prompt=True))
    return out


IMAGE_PROMPT_VERSION = "ad-image-answerable-v1"
_ASK_IMAGE = "Question: {query}\n\nCan the question be answered from this image alone? Answer yes or no."


def build_image_messages(query: str) -> list[dict]:
    """Multimodal AD (a chart or page image instead of a passage): one user turn, the image, then the ask."""
    from skr_ray.models.vision import image_messages

    return image_messages(_ASK_IMAGE.format(query=query))


def render_image_prompts(processor, queries: list[str]) -> list[str]:
    """Chat-rendered multimodal AD prompts (one image placeholder each), ending where the answer starts."""
    return [processor.apply_chat_template(build_image_messages(q), tokenize=False, add_generation_prompt=True)
            for q in queries]


_SENTINEL = "\u2063PASSAGE\u2063"


def shared_prefix_ids(tokenizer) -> list[int]:
    """Token ids every rendered AD prompt starts with (system turn, chat markers, 'Passage:'; for a base model the
    worked records too)."""
    if fewshot_style(tokenizer):
        text = _fewshot_opening() + _FEWSHOT_ASK.format(passage=_SENTINEL, query="q")
    else:
        text = tokenizer.apply_chat_template(build_messages("q", _SENTINEL), tokenize=False,
                                             add_generation_prompt=True)
    prefix = text[: text.index(_SENTINEL)].rstrip()  # the whitespace may merge with the passage's first token
    return tokenizer(prefix, add_special_tokens=False)["input_ids"]


def shared_prompt_prefix(model, tokenizer):
    """The AD prompt's opening as a KV cache of ``model`` (with its active adapter) for forward-only reads."""
    from skr_ray.models.shared_prompt import SharedPromptPrefix

    return SharedPromptPrefix(model, shared_prefix_ids(tokenizer), tokenizer.pad_token_id)
