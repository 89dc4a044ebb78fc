"""OD prompts: the page image (or a crop of it) and one request, as one user turn.

Base NTP answers the box request by generation (parsed with ``parse_box``); the SKR model reads the
final-token state of the very same box prompt with its box head, so the two differ only in how the answer
is read out. The other requests feed the self-annotation strategies (``tasks/od/strategies``).
"""

from __future__ import annotations

from typing import Any

PROMPT_VERSION = "od-box-v1"
DEFAULT_OBJECT = "the figure or table on this page, together with its caption and its source line"

_ASK = (
    "Find {target}. Give its bounding box as [x0, y0, x1, y1]: left, top, right and bottom edges "
    "as fractions of the page width and height, between 0 and 1."
)

# One request per kind; {target} is the composite object (od.target).
QUESTIONS = {
    # direct / multi_turn: boxes as text
    "box": _ASK,
    "box_object": _ASK.replace("{target}", "the figure or table on this page (without its caption)"),
    "box_caption": _ASK.replace("{target}", "the caption or title of the figure or table on this page"),
    "box_source": _ASK.replace("{target}", "the source line or note under the figure or table on this page"),
    # fuzzy: a short description, asked on the page and on each crop
    "describe": "Describe the figure or table in this image in at most five words.",
    # ocr: the anchor strings, read by the model, found among tesseract's words
    "caption_text": "Copy the caption or title of the figure or table on this page, word for word.",
    "source_text": "Copy the source line or note of the figure or table on this page, word for word. "
                   "Answer none if there is none.",
}


def question(kind: str, target: str = "") -> str:
    return QUESTIONS[kind].format(target=target or DEFAULT_OBJECT)


def build_messages(target: str, kind: str = "box") -> list[dict[str, Any]]:
    """One user turn: the image, then the request."""
    from skr_ray.models.vision import image_messages

    return image_messages(question(kind, target))


def render_prompts(processor: Any, targets: list[str], kind: str = "box") -> list[str]:
    """Chat-rendered prompts (one image placeholder each) ending where the model's answer starts."""
    return [processor.apply_chat_template(build_messages(t or DEFAULT_OBJECT, kind), tokenize=False,
                                          add_generation_prompt=True) for t in targets]
