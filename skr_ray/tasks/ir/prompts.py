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


# E5-V style prompt baseline: summarize the input in one word and read the last token's state.
E5V_TEMPLATE = "{text}\nSummarize the above in one word:"


# Image documents (charts, pages): the model writes one question the image answers, from the image alone.
IMAGE_PROMPT_VERSION = "ir-image-question-v1"
IMAGE_ASK = "Write one question that this image answers."
