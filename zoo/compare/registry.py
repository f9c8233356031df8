"""The task list of ``zoo compare``: filled through the hook ``zoo_register_tasks``.

Tasks are collected once per variant registry (:class:`zoo.registry.Registry`), the
first time they are needed; :func:`register_task` adds one in-process (notebooks,
tests). A refused task (bad object, taken name) or a plugin whose hook raises is
recorded in :func:`task_problems` and does not hide the other tasks.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from zoo.compare.task import Task, validate_task
from zoo.registry import Registry, default_registry

__all__ = ["list_tasks", "get_task", "register_task", "task_problems"]


@dataclass
class _Tasks:
    tasks: dict[str, Task] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


_by_registry: weakref.WeakKeyDictionary[Registry, _Tasks] = weakref.WeakKeyDictionary()


def _add(store: _Tasks, task: Any) -> Task:
    task = validate_task(task)
    if task.name in store.tasks:
        raise ValueError(f"cannot register compare task {task.name!r}: the name is already taken by "
                         f"{type(store.tasks[task.name]).__module__}.{type(store.tasks[task.name]).__qualname__}")
    store.tasks[task.name] = task
    return task


def _store(registry: Registry | None = None) -> _Tasks:
    reg = registry or default_registry()
    store = _by_registry.get(reg)
    if store is None:
        store = _by_registry[reg] = _Tasks()

        def register(task: Any) -> None:
            try:
                _add(store, task)
            except ValueError as exc:
                store.problems.append(str(exc))

        try:
            reg.call_tasks_hook(register)
        except Exception as exc:  # noqa: BLE001 - one bad plugin must not hide the others
            store.problems.append(f"zoo_register_tasks raised {type(exc).__name__}: {exc}")
    return store


def register_task(task: Task, registry: Registry | None = None) -> Task:
    """Register ``task`` in-process; a taken name or an unusable object raises ``ValueError``."""
    return _add(_store(registry), task)


def list_tasks(registry: Registry | None = None) -> list[str]:
    """Names of the registered tasks, in the order the plugins registered them."""
    return list(_store(registry).tasks)


def get_task(name: str, registry: Registry | None = None) -> Task:
    """The task registered as ``name``; unknown -> ``ValueError`` listing the known ones."""
    tasks = _store(registry).tasks
    if name not in tasks:
        known = ", ".join(tasks) or "none (no plugin registers tasks; see `zoo plugins`)"
        raise ValueError(f"unknown compare task {name!r}; known tasks: {known}")
    return tasks[name]


def task_problems(registry: Registry | None = None) -> list[str]:
    """Why tasks were refused (bad object, taken name, a hook that raised)."""
    return list(_store(registry).problems)
