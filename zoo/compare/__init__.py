"""``zoo compare``: what each variant can learn from its context, measured.

Every variant is trained on every task under one budget (:mod:`zoo.compare.runner`);
tasks come from plugins through the hook :func:`zoo.hookspecs.zoo_register_tasks`
(:mod:`zoo.compare.registry`). Python use:

```python
from zoo.compare import compare
doc = compare(zoo.list_variants(), tasks=["recall"], quick=True)   # {"schema": "zoo-compare/1", ...}
```
"""

from __future__ import annotations

from zoo.compare.registry import get_task, list_tasks, register_task, task_problems
from zoo.compare.runner import FLOOR, FULL, QUICK, SCHEMA, Tier
from zoo.compare.task import Conditioning, Problem, Task

__all__ = [
    "Task", "Problem", "Conditioning", "Tier", "QUICK", "FULL", "SCHEMA", "FLOOR",
    "list_tasks", "get_task", "register_task", "task_problems", "compare",
]


def compare(names, tasks=None, *, quick: bool = False, seed: int = 0, device: str = "cpu", progress=None) -> dict:
    """Run the comparison and return the ``zoo-compare/1`` document.

    Args:
        names: variant names or aliases (unknown -> :class:`zoo.UnknownVariantError`).
        tasks: task names (default: every registered task; unknown -> ``ValueError``).
        quick: the small tier (:data:`QUICK`) instead of :data:`FULL`.
        seed: the first seed; the tier says how many consecutive seeds run.
        device: torch device for training.
        progress: ``progress(done, total, message)`` called as runs start.

    Returns:
        ``{"schema": "zoo-compare/1", "tier": ..., "results": [row, ...]}``, one row per
        task and variant plus one per task for the floor ``"variant": "none"``.
    """
    from zoo.compare.report import document
    from zoo.compare.runner import compare_rows
    from zoo.registry import default_registry

    reg = default_registry()
    specs = [reg.get(n) for n in names]
    task_objs = [get_task(t) for t in (tasks or list_tasks())]
    tier = QUICK if quick else FULL
    rows = compare_rows(specs, task_objs, tier, seed=seed, device=device, progress=progress)
    return document(rows, tier, seed=seed, device=device, tasks=task_objs)
