"""OD prompt: the page image and a request for the composite object's box, as text coordinates.

Base NTP answers it by generation (parsed with ``parse_box``); the SKR model reads the final-token
state of the very same prompt with its box head, so the two differ only in how the answer is read out.
"""

from __future__ import annotations

from typing import Any

PROMPT_VERSION = "od-box-v1"
DEFAULT_OBJECT = "the figure or table on this page, together with its caption and its source line"

_ASK = (
    "Find {target}. Give its bounding box as [x0, y0, x1, y1]: left, top, right and bottom edges "
    "as fractions of the page width and height, between 0 and 1."
)


def build_messages(target: str) -> list[dict[str, Any]]:
    """One user turn: the page image, then the request."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": _ASK.format(target=target)}]}]


def render_prompts(processor: Any, targets: list[str]) -> list[str]:
    """Chat-rendered prompts (one image placeholder each) ending where the model's answer starts."""
    return [processor.apply_chat_template(build_messages(t or DEFAULT_OBJECT), tokenize=False,
                                          add_generation_prompt=True) for t in targets]
