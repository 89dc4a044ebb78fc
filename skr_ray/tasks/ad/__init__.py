"""AD: answerability of a question from a passage -> classifier head with a calibrated probability."""

from skr_ray.models.heads import make_classifier_head
from skr_ray.registry import Task, register_task
from skr_ray.tasks.ad.loss import bce_loss
from skr_ray.tasks.ad.prompts import PROMPT_VERSION


def _no_single_input_prompt(text: str) -> list[dict[str, str]]:
    raise TypeError("AD prompts take a (question, passage) pair: see skr_ray.tasks.ad.prompts.build_messages")


def _no_single_input_parse(raw: str, source_text: str, options: object) -> tuple[str, str]:
    raise TypeError("AD answers are parsed with skr_ray.tasks.ad.labels.parse_yes_no")


TASK = register_task(
    Task(
        name="ad",
        prompt_version=PROMPT_VERSION,
        build_messages=_no_single_input_prompt,
        parse=_no_single_input_parse,
        make_head=make_classifier_head,
        loss=bce_loss,
        training="skr_ray.tasks.ad.training",
        stages={
            "annotate": "skr_ray.tasks.ad.annotate:run_ad_annotation",
            "train": "skr_ray.train.trainer:run_training_stage",
            "evaluate": "skr_ray.tasks.ad.evaluate:run_ad_evaluation",
        },
    )
)
