"""AD: answerability of a question from a passage -> classifier head with a calibrated probability.

The task's roles, as in every task folder: ``annotate``, ``training``, ``evaluate``, ``head``, ``loss``,
``prompts`` (with ``labels``, their parsing) and ``probe`` (the head-only baseline and SKR's starting head);
``pairs``, ``ontopic``, ``scoring``, ``metrics`` and ``sft`` are AD's own.
"""

from skr_ray.registry import Task, register_task
from skr_ray.tasks.ad.head import head_options, make_head

TASK = register_task(
    Task(
        name="ad",
        make_head=make_head,
        head_options=head_options,
        route="/v1/classify",
        training="skr_ray.tasks.ad.training",
        stages={
            "annotate": "skr_ray.tasks.ad.annotate:run_ad_annotation",
            "train": "skr_ray.train.trainer:run_training_stage",
            "evaluate": "skr_ray.tasks.ad.evaluate:run_ad_evaluation",
        },
    )
)
