"""multi_turn: the object, its caption/title and its source line asked separately (one round, three asks);
the label is the smallest rectangle enclosing the boxes that parsed, and the row says which parts did."""

from __future__ import annotations

from skr_ray.tasks.od.boxes import enclosing, parse_box
from skr_ray.tasks.od.search import Ask, PageInfo, PageLabel, Strategy

PARTS = {"object": "box_object", "caption": "box_caption", "source": "box_source"}


def multi_turn(page: PageInfo) -> Strategy:
    answers = yield [Ask(page.page_id, page.full, kind) for kind in PARTS.values()]
    parts, trace, boxes = {}, [], []
    for (part, kind), answer in zip(PARTS.items(), answers):
        box, status = parse_box(answer)
        parts[part] = status
        trace.append({"kind": kind, "crop": list(page.full), "answer": answer, "status": status})
        if box is not None:
            boxes.append(box)
    if parts["object"] != "ok":  # a caption or source line alone is not the object
        return PageLabel(None, f"object_{parts['object']}", parts, trace, asks=3)
    return PageLabel(enclosing(boxes), "ok", parts, trace, asks=3)
