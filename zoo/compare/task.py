"""What a ``zoo compare`` task is: a seeded problem generator plus the tiny model around
the conditioning layer.

A task is an object with a few attributes and a :meth:`Task.build` method; a plugin
registers it through the hook :func:`zoo.hookspecs.zoo_register_tasks`. The runner
(:mod:`zoo.compare.runner`) builds one :class:`Problem` per seed, wraps each variant's
layer in a :class:`Conditioning` (or passes ``None`` for the floor, ``"variant": "none"``),
trains ``problem.model(cond)`` with the same steps, batch and learning-rate grid for every
variant, and reports ``problem.score`` on a held-out batch.

Example, a complete third-party task:

```python
class Copy(zoo.compare.Task):
    name, summary, metric = "copy", "output the context token at x's position", "accuracy"

    def build(self, seed, *, quick):
        return CopyProblem(seed)      # a zoo.compare.Problem

@zoo.hookimpl
def zoo_register_tasks(register):
    register(Copy())
```
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from zoo.spec import NAME_PATTERN

__all__ = ["Task", "Problem", "Conditioning", "validate_task"]


class Conditioning(nn.Module):
    """A variant's layer behind one call, ``cond(x, context, context_mask) -> (B, N, Dq)``.

    The runner builds it from the variant's spec: it passes ``context`` only when the
    variant's ``make_inputs`` has one and ``context_mask`` only when the variant accepts
    masks (``capabilities.masks``), so a task's model never needs to know the variant.
    """

    def __init__(self, layer: nn.Module, *, takes_context: bool = True, takes_mask: bool = True) -> None:
        super().__init__()
        self.layer = layer
        self.takes_context = takes_context
        self.takes_mask = takes_mask

    def forward(self, x: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:
        kwargs: dict[str, Any] = {}
        if self.takes_context and context is not None:
            kwargs["context"] = context
            if context_mask is not None and self.takes_mask:
                kwargs["context_mask"] = context_mask
        return self.layer(x, **kwargs)


class Problem:
    """One seeded instance of a task (its fixed tables, data pools, model).

    Attributes:
        query_len: N, the length of ``x`` the layer sees.
        context_len: M, the length of ``context`` (tokens per neighbour R for
            ``context_form == "neighbours"``).
        context_form: ``"sequence"``: ``context (B, M, Dc)``; ``"neighbours"``:
            retrieved neighbours ``(B, L, K, R, Dc)`` (chunk-causal, as RETRO reads
            them). A variant whose inputs have another form gets a null row.
    """

    query_len: int = 8
    context_len: int = 8
    context_form: str = "sequence"

    def batch(self, generator: torch.Generator, size: int, split: str = "train") -> dict[str, Tensor]:
        """A batch of ``size`` examples; ``split`` is ``"train"``, ``"val"`` or ``"test"``.

        Returns a dict the model reads (``x``, ``context``, optional ``context_mask``,
        ``target``, ...). Deterministic given the generator's state.
        """
        raise NotImplementedError

    def model(self, cond: Conditioning | None) -> nn.Module:
        """The task's tiny model around ``cond``; ``None`` builds the floor (no layer).

        ``module(batch)`` returns the prediction that :meth:`loss` and :meth:`score`
        read. Every trainable parameter outside ``cond`` must be unable to solve the
        task alone, so that the floor stays near chance.
        """
        raise NotImplementedError

    def loss(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """The training loss (a scalar tensor)."""
        raise NotImplementedError

    def score(self, pred: Tensor, batch: dict[str, Tensor]) -> float:
        """The task's metric on one batch (see :attr:`Task.metric`)."""
        raise NotImplementedError


class Task:
    """A ``zoo compare`` task. Subclass it, set the attributes, implement :meth:`build`.

    Attributes:
        name: registry name (lower case, digits, ``-``, ``_``, ``.``).
        summary: one line for listings and reports.
        metric: the name of what :meth:`Problem.score` returns (``"accuracy"``, ...).
        higher_is_better: direction of the metric.
        chance: the metric of a model that uses neither context nor learning, for the
            report (``None`` if not known in closed form).
        layer_fields: config fields for the variant's layer; only those its config
            declares are passed (``query_dim``, ``context_dim``, ``heads``, ...).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    metric: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True
    chance: ClassVar[float | None] = None
    layer_fields: ClassVar[dict[str, Any]] = {"query_dim": 32, "context_dim": 32, "heads": 4, "dim_head": 8}

    def build(self, seed: int, *, quick: bool) -> Problem:
        """The problem for ``seed`` (tables, data pools); ``quick`` selects the small tier."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<zoo compare task {self.name!r}>"


def validate_task(task: Any) -> Task:
    """Check that ``task`` can be registered; raise ``ValueError`` saying what is wrong."""
    if isinstance(task, type):
        raise ValueError(f"register() expects a task instance, got the class {task.__name__}: call it, {task.__name__}()")
    for attr in ("name", "summary", "metric", "higher_is_better", "build", "layer_fields"):
        if not hasattr(task, attr):
            raise ValueError(f"a compare task needs the attribute {attr!r} (subclass zoo.compare.Task); "
                             f"{type(task).__name__} has none")
    if not isinstance(task.name, str) or not NAME_PATTERN.fullmatch(task.name):
        raise ValueError(f"task name {task.name!r} is invalid: use lower-case letters, digits, '-', '_' or '.'")
    if not callable(task.build):
        raise ValueError(f"task {task.name!r}: build must be callable")
    if not isinstance(task.layer_fields, dict) or "query_dim" not in task.layer_fields:
        raise ValueError(f"task {task.name!r}: layer_fields must be a dict with at least 'query_dim'")
    return task
