"""direct: one turn, the normalized box of the whole composite object (figure/table + caption + source)."""

from __future__ import annotations

from skr_ray.tasks.od.boxes import parse_box
from skr_ray.tasks.od.search import Ask, PageInfo, PageLabel, Strategy


def direct(page: PageInfo, kind: str = "box") -> Strategy:
    (answer,) = yield [Ask(page.page_id, page.full, kind)]
    box, status = parse_box(answer)
    return PageLabel(box, status, trace=[{"kind": kind, "crop": list(page.full), "answer": answer, "status": status}],
                     asks=1)
