"""OD: the box of a composite object (figure/table + caption + source line) on a page image.

Stages: ``annotate`` (the four box self-annotation strategies, searched per page on a Ray Data actor pool),
``train`` (the shared Ray Train + DeepSpeed loop: LoRA + box head, L1), ``evaluate`` (IoU against
``composite_bbox``), and serving (``POST /v1/detect``).
"""

import json

from skr_ray.models.heads import make_box_head
from skr_ray.registry import Task, register_task
from skr_ray.tasks.od.boxes import parse_box
from skr_ray.tasks.od.loss import box_l1_loss
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
        make_head=make_box_head,
        loss=box_l1_loss,
        training="skr_ray.tasks.od.training",
        checks="skr_ray.tasks.od.annotate:check_stages",
        stages={
            "annotate": "skr_ray.tasks.od.annotate:run_od_annotation",
            "train": "skr_ray.train.trainer:run_training_stage",
            "evaluate": "skr_ray.tasks.od.evaluate:run_od_evaluation",
        },
    )
)
