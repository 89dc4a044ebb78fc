"""Task registry: each task folder registers its :class:`Task` under a name when it is imported.

Shared code (the training loop, the trainer) reaches task-specific behaviour only through the :class:`Task`
looked up here or handed to it, so a new task is a new folder (named in ``skr_ray/tasks/__init__.py``, its head
in ``skr_ray.models.heads.TASK_HEADS``). The registry imports no task: the built-in ones register when
``skr_ray.tasks`` is imported (the CLI, serving and planning do; a Ray worker that unpickles a :class:`Task` imports
its task package with it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch


@dataclass(frozen=True)
class Task:
    """What a task contributes to the shared pipeline: only what code outside the task's folder reads.

    Prompts, label parsing, losses and baselines stay inside ``skr_ray/tasks/<task>/`` (its ``prompts``,
    ``labels``, ``loss``, ``probe`` modules), reached through the stages and training hooks named here."""

    name: str
    make_head: Callable[[int, dict[str, Any]], torch.nn.Module]
    """(hidden_size, head options) -> head module applied to the pooled final-token state (the trainer, serving
    and ``skr plan`` build heads through it)."""
    head_options: Callable[[Any], dict[str, Any]]
    """config -> the head's options as a checkpoint's ``head.json`` records them (sizes, input norm)."""
    route: str = ""
    """The Serve route that answers with this task's checkpoints (``/v1/embeddings``, ``/v1/classify``, ...)."""
    image_inputs: bool = False
    """Every input is an image (OD's pages), whatever ``data.modality`` says: planning sizes it as one."""
    training: str = ""
    """Module with the re-expression loop hooks: load_examples, head_info, batch_loss, validate."""
    stages: dict[str, str] = field(default_factory=dict)
    """The task's pipeline stages: 'annotate' | 'train' | 'evaluate' -> 'module:function' taking the config
    (``skr annotate|train|evaluate|run``)."""
    checks: str = ""
    """'module:function' taking (config, stages about to run): raises before any work on what cannot run."""

    def training_hooks(self) -> ModuleType:
        return importlib.import_module(self.training)

    def check(self, cfg: Any, stages: tuple[str, ...]) -> None:
        if self.checks:
            module, func = self.checks.split(":")
            getattr(importlib.import_module(module), func)(cfg, stages)

    def stage(self, name: str) -> Callable[..., dict] | None:
        target = self.stages.get(name)
        if target is None:
            return None
        module, func = target.split(":")
        return getattr(importlib.import_module(module), func)


_REGISTRY: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    if task.name in _REGISTRY:
        raise ValueError(f"task {task.name!r} registered twice")
    _REGISTRY[task.name] = task
    return task


def task_for_route(route: str) -> Task:
    """The task whose checkpoints a Serve route answers with."""
    for task in _REGISTRY.values():
        if task.route == route:
            return task
    raise KeyError(f"no registered task serves {route!r}")


def get_task(name: str) -> Task:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; registered: {sorted(_REGISTRY)} (the built-in tasks register "
                       "when skr_ray.tasks is imported)") from None
