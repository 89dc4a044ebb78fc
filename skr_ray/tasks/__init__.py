"""The built-in tasks: importing this package registers ir, ad and od with :mod:`skr_ray.registry`.

Code above the tasks (CLI, serving, planning) looks a task up with :func:`get_task` from here, which is the
registry's lookup with the built-in tasks registered. Each task's folder holds its prompts, label parsing,
stages and training hooks (``skr_ray/tasks/<task>/__init__.py`` registers them).
"""

from skr_ray.registry import get_task, task_for_route  # noqa: F401  (lookups, for the layers above)
from skr_ray.tasks import ad, ir, od  # noqa: F401  (register themselves)
