"""OD: the box of a composite object (figure/table + caption + source line) on a page image.

What exists: the box head, its checkpoint format, the direct-ask prompt and answer parser, and
serving (``POST /v1/detect``). Not built yet: OD self-annotation (direct ask, fuzzy-localization crop
search, OCR anchors), OD training and OD evaluation -- ``skr annotate|train|evaluate task=od`` say so.
"""

import json

from skr_ray.tasks import Task, register_task
from skr_ray.tasks.od.boxes import parse_box
from skr_ray.tasks.od.head import box_l1_loss, make_head
from skr_ray.tasks.od.prompts import PROMPT_VERSION, build_messages


def _parse(raw: str, source_text: str, options: object) -> tuple[str, str]:
    box, status = parse_box(raw)
    return (json.dumps([round(v, 6) for v in box]) if box else ""), status


TASK = register_task(
    Task(
        name="od",
        prompt_version=PROMPT_VERSION,
        build_messages=build_messages,
        parse=_parse,
        make_head=make_head,
        loss=box_l1_loss,
        stages={stage: "skr_ray.tasks.od.stages:not_built" for stage in ("annotate", "train", "evaluate")},
    )
)
