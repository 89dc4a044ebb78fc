"""The four box self-annotation strategies (``od.strategy``): one module each, one generator per page.

- ``direct``: one question, the whole composite object's box as text.
- ``multi_turn``: three questions (object, caption/title, source line); the label encloses what parsed.
- ``fuzzy``: fuzzy-localization crop search for models without grounding (descriptions, no coordinates).
- ``ocr``: caption/source text read by the model, found among tesseract's words (anchors), joined with
  the object's box from ``direct`` or ``fuzzy``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from skr_ray.tasks.od.search import PageInfo, Strategy

STRATEGIES = ("direct", "multi_turn", "fuzzy", "ocr")


def strategy(name: str, options: Any, similarity: Any = None) -> Callable[[PageInfo], Strategy]:
    """page -> that page's search generator, for ``od.strategy=name``."""
    if name == "direct":
        from skr_ray.tasks.od.strategies.direct import direct

        return lambda page: direct(page)
    if name == "multi_turn":
        from skr_ray.tasks.od.strategies.multi_turn import multi_turn

        return lambda page: multi_turn(page)
    if name == "fuzzy":
        from skr_ray.tasks.od.strategies.fuzzy import fuzzy

        return lambda page: fuzzy(page, options, similarity)
    if name == "ocr":
        from skr_ray.tasks.od.strategies.ocr import ocr

        return lambda page: ocr(page, options, similarity)
    raise ValueError(f"unknown od.strategy {name!r}; known: {STRATEGIES}")
