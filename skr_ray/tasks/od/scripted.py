"""A scripted describer: a deterministic oracle that answers the strategies' questions from the true boxes.

It exists to test the search algorithms and the OD pipeline where no vision-language model can be run: it
plays a model that sees perfectly. It reads ``annotations.json`` (docpages format), so its labels are
*not* self-annotation; they are marked ``scripted:...`` in every label row's ``model_id`` and the report.

The object it talks about is the page's largest composite object (figure/table + caption). Its description
stays the same while a crop still holds that whole object (a few pixels of slack) and changes as soon as the
crop cuts it. With ``noise`` > 0 that share of answers (chosen by a seeded hash of the question) is replaced
by a wrong one: random words, a random box, or nothing.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from skr_ray.pages import read_truth
from skr_ray.tasks.od.boxes import contains
from skr_ray.tasks.od.search import Ask

SLACK_PX = 2.0
_WRONG = ["a photo of a cat", "blue sky over the sea", "", "[0.2, 0.1, 0.3, 0.9]", "I am not sure.",
          "a list of references", "three people at a table", "none"]
_LABEL_PREFIX = re.compile(r"^\s*(fig(ure)?|table|tab)\.?\s*[\divxlc]+[.:]?\s*", re.IGNORECASE)


def _describe(category: str, caption: str) -> str:
    words = re.findall(r"[A-Za-z]{3,}", _LABEL_PREFIX.sub("", caption or ""))[:3]
    return " ".join([category, "of", *words]) if words else f"{category} with its caption"


class ScriptedDescriber:
    """Asker protocol: ``asker(asks) -> answers``."""

    def __init__(self, truth_path: str | Path, noise: float = 0.0, seed: int = 0) -> None:
        root = Path(truth_path).expanduser().resolve()
        path = root / "annotations.json" if root.is_dir() else root
        self.noise, self.seed = noise, seed
        self.truth: dict[str, dict[str, Any]] = {}
        for page in read_truth(path):
            area = lambda o: (o["composite_bbox"][2] - o["composite_bbox"][0]) * (o["composite_bbox"][3] - o["composite_bbox"][1])  # noqa: E731
            target = max(page.objects, key=area)
            self.truth[page.ref.page_id] = {"w": page.width, "h": page.height, "object": target,
                                            "description": _describe(target.get("category", "object"),
                                                                     target.get("caption_text", ""))}
        self.model_id = f"scripted:{path}:noise={noise}"

    def _wrong(self, ask: Ask) -> str | None:
        if self.noise <= 0:
            return None
        digest = hashlib.sha256(f"{self.seed}:{ask.page_id}:{ask.crop}:{ask.kind}".encode()).digest()
        rng = random.Random(digest)
        return rng.choice(_WRONG) if rng.random() < self.noise else None

    def answer(self, ask: Ask) -> str:
        wrong = self._wrong(ask)
        if wrong is not None:
            return wrong
        page = self.truth.get(ask.page_id)
        if page is None:
            return ""
        obj, w, h = page["object"], page["w"], page["h"]

        def as_text(box: Sequence[float] | None) -> str:
            if not box:
                return "There is none."
            return "[" + ", ".join(f"{v:.3f}" for v in (box[0] / w, box[1] / h, box[2] / w, box[3] / h)) + "]"

        if ask.kind == "describe":
            whole = contains(ask.crop, obj["composite_bbox"], SLACK_PX)
            return page["description"] if whole else "lines of body text"
        if ask.kind == "box":
            return as_text(obj["composite_bbox"])
        if ask.kind == "box_object":
            return as_text(obj["bbox"])
        if ask.kind == "box_caption":
            return as_text(obj.get("caption_bbox"))
        if ask.kind == "box_source":
            return as_text(None)  # docpages marks no source lines
        if ask.kind == "caption_text":
            return obj.get("caption_text") or "none"
        if ask.kind == "source_text":
            return "none"
        return ""

    def __call__(self, asks: Sequence[Ask]) -> list[str]:
        return [self.answer(a) for a in asks]
