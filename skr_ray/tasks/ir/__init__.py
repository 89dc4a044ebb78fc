"""IR: self-written questions -> contrastive re-expression of the final-token state."""

from skr_ray.models.heads import make_embedding_head
from skr_ray.registry import Task, register_task
from skr_ray.tasks.ir.labels import parse_question
from skr_ray.tasks.ir.loss import contrastive_loss
from skr_ray.tasks.ir.prompts import EXAMPLE_QUESTION, PROMPT_VERSION, build_messages

TASK = register_task(
    Task(
        name="ir",
        prompt_version=PROMPT_VERSION,
        build_messages=build_messages,
        parse=parse_question,
        make_head=make_embedding_head,
        loss=contrastive_loss,
        example_labels=(EXAMPLE_QUESTION,),
        training="skr_ray.tasks.ir.training",
        stages={
            "annotate": "skr_ray.tasks.ir.annotate:run_annotation",
            "train": "skr_ray.train.trainer:run_training",
            "evaluate": "skr_ray.tasks.ir.evaluate:run_ir_evaluation",
        },
    )
)
