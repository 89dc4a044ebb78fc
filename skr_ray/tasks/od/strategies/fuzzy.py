"""fuzzy: fuzzy-localization crop search, for models that describe but do not ground.

1. Ask for a short description (<= ``od.max_description_words`` words) of the object on the full page.
2. Move one edge at a time by bisection toward the opposite edge: ask again on the crop; when the new
   description is at least ``od.similarity_threshold`` similar to the original, the object is still whole
   in the crop and the cut is kept, else the edge backs off (the cut position becomes that edge's limit).
3. Cycle the four edges until no edge can move by ``od.min_step_px`` or more.

Every step (crop, answer, similarity, decision) goes into the label's trace. A malformed answer on a crop
counts as "different" (the edge backs off: the box stays larger, never loses the object on that account);
a malformed first description ends the page with status ``no_description``.
"""

from __future__ import annotations

import re
from typing import Any

from skr_ray.tasks.od.boxes import to_normalized
from skr_ray.tasks.od.search import Ask, PageInfo, PageLabel, Strategy

EDGES = ("left", "top", "right", "bottom")
_WORD = re.compile(r"[\w'-]+")


def clean_description(answer: str, max_words: int) -> str:
    """The first line's first ``max_words`` words, lowercase, without quotes or chat debris."""
    line = next((ln for ln in (answer or "").splitlines() if ln.strip()), "")
    return " ".join(_WORD.findall(line.lower())[:max_words])


def fuzzy(page: PageInfo, options: Any, similarity: Any) -> Strategy:
    threshold = float(options.similarity_threshold)
    min_step = float(options.min_step_px)
    (answer,) = yield [Ask(page.page_id, page.full, "describe")]
    original = clean_description(answer, options.max_description_words)
    trace: list[dict[str, Any]] = [{"edge": None, "crop": list(page.full), "answer": answer, "description": original}]
    if not original:
        return PageLabel(None, "no_description", trace=trace, asks=1)
    box = list(page.full)  # x0, y0, x1, y1 in pixels; always holds the object (as far as the answers tell)
    limit = [page.width, page.height, 0, 0]  # per edge: nearest position known to lose the object
    asks = 1
    while True:
        moved = False
        for e, edge in enumerate(EDGES):
            opposite = box[(e + 2) % 4]
            limit[e] = min(limit[e], opposite) if e < 2 else max(limit[e], opposite)
            if abs(limit[e] - box[e]) < min_step:
                continue
            cut = int(round((box[e] + limit[e]) / 2))
            crop = list(box)
            crop[e] = cut
            (answer,) = yield [Ask(page.page_id, tuple(crop), "describe")]
            asks += 1
            described = clean_description(answer, options.max_description_words)
            score = float(similarity(original, described)) if described else 0.0
            keep = score >= threshold
            if keep:
                box[e] = cut
            else:
                limit[e] = cut
            trace.append({"edge": edge, "crop": crop, "answer": answer, "similarity": round(score, 4),
                          "decision": "keep" if keep else "back_off"})
            moved = True
        if not moved:
            break
    if box == list(page.full):
        return PageLabel(None, "no_cut", trace=trace, asks=asks)  # every crop changed the answer: nothing found
    return PageLabel(to_normalized(box, page.width, page.height), "ok", trace=trace, asks=asks)
