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


def render_prompts(tokenizer, queries: list[str], passages: list[str], max_passage_tokens: int) -> list[str]:
    """Chat-rendered prompts ending where the assistant's answer starts; passages cut by tokens."""
    ids = tokenizer(list(passages), add_special_tokens=False, truncation=True, max_length=max_passage_tokens)
    out = []
    for query, row in zip(queries, ids["input_ids"]):
        messages = build_messages(query, tokenizer.decode(row))
        if tokenizer.chat_template:
            out.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        else:
            out.append("\n\n".join(m["content"] for m in messages) + "\nAnswer:")
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
    """Token ids every rendered AD prompt starts with (system turn, chat markers, 'Passage:')."""
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(build_messages("q", _SENTINEL), tokenize=False,
                                             add_generation_prompt=True)
    else:
        text = "\n\n".join(m["content"] for m in build_messages("q", _SENTINEL))
    prefix = text[: text.index(_SENTINEL)].rstrip()  # the whitespace may merge with the passage's first token
    return tokenizer(prefix, add_special_tokens=False)["input_ids"]


def shared_prompt_prefix(model, tokenizer):
    """The AD prompt's opening as a KV cache of ``model`` (with its active adapter) for forward-only reads."""
    from skr_ray.models.shared_prompt import SharedPromptPrefix

    return SharedPromptPrefix(model, shared_prefix_ids(tokenizer), tokenizer.pad_token_id)
