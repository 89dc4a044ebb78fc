"""OD: the box of a composite object (figure/table + caption + source line) on a page image.

Stages: ``annotate`` (the four box self-annotation strategies, searched per page on a Ray Data actor pool),
``train`` (the shared Ray Train + DeepSpeed loop: LoRA + box head, L1), ``evaluate`` (IoU against
``composite_bbox``), and serving (``POST /v1/detect``). The task's roles, as in every task folder: ``annotate``,
``training``, ``evaluate``, ``head``, ``loss``, ``prompts`` (with ``boxes``, their parsing) and ``probe`` (the
head-only baseline and SKR's starting head); ``search``, ``ask``, ``scripted``, ``strategies`` and friends are OD's
own.
"""

from skr_ray.registry import Task, register_task
from skr_ray.tasks.od.head import head_options, make_head

TASK = register_task(
    Task(
        name="od",
        make_head=make_head,
        head_options=head_options,
        route="/v1/detect",
        image_inputs=True,
        training="skr_ray.tasks.od.training",
        checks="skr_ray.tasks.od.annotate:check_stages",
        stages={
            "annotate": "skr_ray.tasks.od.annotate:run_od_annotation",
            "train": "skr_ray.train.trainer:run_training_stage",
            "evaluate": "skr_ray.tasks.od.evaluate:run_od_evaluation",
        },
    )
)
