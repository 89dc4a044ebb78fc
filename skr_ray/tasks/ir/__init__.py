"""IR: self-written questions -> contrastive re-expression of the final-token state.

The task's roles, as in every task folder: ``annotate`` (self-annotation stage), ``training`` (the shared loop's
hooks), ``evaluate`` (the evaluation stage), ``head``, ``loss``, ``prompts`` (with ``labels``, their parsing) and
``probe`` (the head-only baseline); ``pairs``, ``mining``, ``fusion``, ``index`` (``skr index``, searched by ``/v1/search``) and
``vllm_engine`` are IR's own.
"""

from skr_ray.registry import Task, register_task
from skr_ray.tasks.ir.head import head_options, make_head

TASK = register_task(
    Task(
        name="ir",
        make_head=make_head,
        head_options=head_options,
        route="/v1/embeddings",
        training="skr_ray.tasks.ir.training",
        stages={
            "annotate": "skr_ray.tasks.ir.annotate:run_annotation",
            "train": "skr_ray.train.trainer:run_training_stage",
            "evaluate": "skr_ray.tasks.ir.evaluate:run_ir_evaluation",
            "index": "skr_ray.tasks.ir.index:run_index",
        },
    )
)
