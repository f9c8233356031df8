"""``zoo.distill``: recover what a model knew after :func:`zoo.swap` changed its attention.

The teacher is the model as it was before the swap (``copy.deepcopy`` before
``zoo.swap``); the student is the swapped model. Stages:

- ``"layers"`` (attention transfer, as LoLCATs): each swapped module is trained to
  reproduce the output of the teacher's module at the same path, on the inputs that
  module receives in the teacher (captured with forward hooks). The loss of one step is
  the sum over swapped modules of ``mean((student - teacher)**2) / mean(teacher**2)``
  (each layer weighs the same, whatever its scale).
- ``"model"``: the model's output is trained towards the teacher's (mean squared error on
  ``logits``, ``last_hidden_state`` or the first output tensor).
- ``"both"``: ``"layers"`` for the first half of the steps, then ``"model"``.

The teacher never changes: it runs under ``torch.no_grad`` in eval mode (its mode is
restored afterwards) and its parameters are never handed to the optimizer. With
``trainable="swapped"`` only the swapped modules' parameters train (the others are
frozen for the run and their ``requires_grad`` restored afterwards); ``"all"`` trains
every parameter of the student. Adam; deterministic under ``seed`` (on CPU).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["DistillReport", "distill"]

STAGES = ("layers", "model", "both")
TRAINABLE = ("swapped", "all")


@dataclass
class DistillReport:
    """What :func:`distill` did.

    Attributes:
        steps: optimizer steps taken.
        seconds: wall time of the run.
        losses: the loss of every step.
        layers: per swapped path, ``{"before": e0, "after": e1}``: the relative error
            ``||student - teacher|| / ||teacher||`` of that module's output on the last
            batch, before and after distillation.
        stages: the stage of every step (``"layers"`` or ``"model"``).
    """

    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    layers: dict[str, dict[str, float]] = field(default_factory=dict)
    stages: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"distilled {self.steps} step(s) in {self.seconds:.1f} s; loss "
                 f"{self.losses[0]:.4g} -> {self.losses[-1]:.4g}" if self.losses else "no step"]
        lines += [f"  {p}: relative error {e['before']:.4f} -> {e['after']:.4f}" for p, e in self.layers.items()]
        return "\n".join(lines)


def _first_tensor(out: Any) -> Tensor:
    for key in ("logits", "last_hidden_state", "sample"):
        value = out.get(key) if isinstance(out, Mapping) else getattr(out, key, None)
        if isinstance(value, Tensor):
            return value
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, Tensor):
                return item
    raise ValueError(f"zoo.distill: cannot find an output tensor in {type(out).__name__} (expected a tensor, a "
                     f"tuple starting with one, or an output with logits / last_hidden_state)")


def _call(model: nn.Module, batch: Any) -> Any:
    return model(**batch) if isinstance(batch, Mapping) else model(batch)


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


def _capture(teacher: nn.Module, paths: list[str], batch: Any) -> tuple[Any, dict[str, tuple]]:
    """The teacher's output, and per path the (args, kwargs, output tensor) its module saw."""
    seen: dict[str, tuple] = {}
    handles = []
    for path in paths:
        def hook(module, args, kwargs, output, path=path):
            seen.setdefault(path, (args, kwargs, _first_tensor(output).detach()))
        handles.append(teacher.get_submodule(path).register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            out = _call(teacher, batch)
    finally:
        for h in handles:
            h.remove()
    missing = [p for p in paths if p not in seen]
    if missing:
        raise ValueError(f"zoo.distill: the teacher's modules at {missing} were not called on a batch; each swapped "
                         f"path must run in the teacher's forward (is the teacher the model before the swap?)")
    return out, seen


def _layer_errors(model: nn.Module, paths: list[str], seen: dict[str, tuple]) -> dict[str, float]:
    errors = {}
    with torch.no_grad():
        for path in paths:
            args, kwargs, want = seen[path]
            got = _first_tensor(model.get_submodule(path)(*args, **kwargs))
            errors[path] = float((got.float() - want.float()).norm() / want.float().norm().clamp_min(1e-30))
    return errors


def _check(model: nn.Module, teacher: nn.Module, steps: Any, stage: str, trainable: str, lr: Any) -> list[str]:
    from zoo.swapping import swapped_paths

    if not isinstance(model, nn.Module) or not isinstance(teacher, nn.Module):
        raise ValueError(f"zoo.distill expects two torch.nn.Module (the swapped model and the teacher), got "
                         f"{type(model).__name__} and {type(teacher).__name__}")
    if model is teacher:
        raise ValueError("zoo.distill: the teacher is the model itself; pass a copy made before the swap "
                         "(teacher = copy.deepcopy(model); zoo.swap(model, ...))")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"zoo.distill: steps must be a positive int, got {steps!r}")
    if stage not in STAGES:
        raise ValueError(f"zoo.distill: stage must be one of {', '.join(map(repr, STAGES))}, got {stage!r}")
    if trainable not in TRAINABLE:
        raise ValueError(f"zoo.distill: trainable must be one of {', '.join(map(repr, TRAINABLE))}, got {trainable!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"zoo.distill: lr must be a positive number, got {lr!r}")
    paths = list(dict.fromkeys(swapped_paths(model)))
    if not paths:
        raise ValueError("zoo.distill: the model holds no module put there by zoo.swap; swap it first "
                         "(teacher = copy.deepcopy(model); zoo.swap(model, ...); zoo.distill(model, teacher, ...))")
    absent = [p for p in paths if not _has(teacher, p)]
    if absent:
        raise ValueError(f"zoo.distill: the teacher has no module at {absent[:4]}; pass the model as it was "
                         f"before zoo.swap (the same module paths)")
    if any(id(p) in {id(q) for q in teacher.parameters()} for p in model.parameters()):
        raise ValueError("zoo.distill: the model and the teacher share parameters; make the teacher with "
                         "copy.deepcopy(model) before zoo.swap")
    return paths


def _has(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def distill(model: nn.Module, teacher: nn.Module, data: Iterable[Any], /, *, steps: int, lr: float = 1e-3,
            stage: str = "layers", trainable: str = "swapped", seed: int = 0,
            progress: bool = True) -> DistillReport:
    """Train the swapped ``model`` towards ``teacher`` (see the module docstring).

    Args:
        model: holds zoo layers put there by :func:`zoo.swap`.
        teacher: the model as it was before the swap (same module paths).
        data: batches (reused cyclically until ``steps``): a mapping of keyword
            arguments for ``model(**batch)``, or a tensor passed as the first argument.
        steps: optimizer steps.
        lr: Adam's learning rate.
        stage: ``"layers"``, ``"model"`` or ``"both"``.
        trainable: ``"swapped"`` (the swapped modules' parameters) or ``"all"``.
        seed: seeds torch's generators for the run (restored afterwards).
        progress: print progress to stderr.

    Returns:
        A :class:`DistillReport`.

    Raises:
        ValueError: bad arguments, no swapped module, a teacher without those paths or
            sharing the model's parameters, or no batch.
    """
    paths = _check(model, teacher, steps, stage, trainable, lr)
    batches = list(data) if not isinstance(data, (Tensor, Mapping)) else [data]
    if not batches:
        raise ValueError("zoo.distill: data holds no batch (give an iterable of mappings or tensors)")
    device = next(iter(model.parameters())).device
    batches = [_to(b, device) for b in batches]
    swapped = {id(p) for path in paths for p in model.get_submodule(path).parameters()}
    params = [p for p in model.parameters() if trainable == "all" or id(p) in swapped]
    flags = {p: p.requires_grad for p in model.parameters()}
    teacher_flags = {p: p.requires_grad for p in teacher.parameters()}
    teacher_mode = [m.training for m in teacher.modules()]
    last = batches[(steps - 1) % len(batches)]
    plan = (["layers"] * (steps // 2) + ["model"] * (steps - steps // 2) if stage == "both" else [stage] * steps)
    report = DistillReport(steps=steps, seconds=0.0, stages=plan)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        try:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
            for p in model.parameters():
                p.requires_grad_(trainable == "all" or id(p) in swapped)
            _, seen = _capture(teacher, paths, last)
            before = _layer_errors(model, paths, seen)
            optimizer = torch.optim.Adam(params, lr=lr)
            for step, what in enumerate(plan):
                batch = batches[step % len(batches)]
                teacher_out, seen = _capture(teacher, paths, batch)
                if what == "layers":
                    loss = sum(_relative_mse(_first_tensor(model.get_submodule(p)(*seen[p][0], **seen[p][1])),
                                             seen[p][2]) for p in paths)
                else:
                    want = _first_tensor(teacher_out)
                    loss = torch.mean((_first_tensor(_call(model, batch)).float() - want.float()) ** 2)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                report.losses.append(float(loss.detach()))
                if progress and (step + 1 == steps or (step + 1) % max(1, steps // 10) == 0):
                    print(f"zoo.distill: step {step + 1}/{steps} ({what}) loss {report.losses[-1]:.5g} "
                          f"({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
            _, seen = _capture(teacher, paths, last)
            after = _layer_errors(model, paths, seen)
        finally:
            for p, flag in flags.items():
                p.requires_grad_(flag)
            for p, flag in teacher_flags.items():
                p.requires_grad_(flag)
            for m, mode in zip(teacher.modules(), teacher_mode):
                m.training = mode
    report.seconds = time.perf_counter() - start
    report.layers = {p: {"before": before[p], "after": after[p]} for p in paths}
    return report


def _relative_mse(got: Tensor, want: Tensor) -> Tensor:
    return torch.mean((got.float() - want.float()) ** 2) / torch.mean(want.float() ** 2).clamp_min(1e-30)
