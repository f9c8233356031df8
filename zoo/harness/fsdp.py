"""The ``fsdp`` slow check: FSDP2 (``torch.distributed.fsdp.fully_shard``) training equals one process.

Two processes (gloo, on 127.0.0.1) each take half the batch. The layer is sharded with
``fully_shard`` (its parameters become ``DTensor`` shards along dim 0; the root module's
forward all-gathers them, backward reduce-scatters the gradients, averaged over ranks),
then two SGD steps are taken. The full parameters (``DTensor.full_tensor()``) must equal
two SGD steps of one process on the whole batch (float32 tolerance). Two steps, not one:
the second step runs on parameters FSDP itself updated and re-gathered, which catches a
layer that caches a parameter tensor (the cache goes stale once FSDP swaps its parameters
for shards).

A layer FSDP2 cannot shard is skipped with the reason (e.g. it cannot be pickled to the
worker processes, or it holds no parameters). The layer's class must be importable by name.
"""

from __future__ import annotations

import copy
import pickle

import torch

from zoo.harness.case import Case, CheckFailed, SkipCheck, _run, compare
from zoo.harness.slow import LR, run_workers

__all__ = ["check_fsdp"]

STEPS = 2


def _loss(out: torch.Tensor, cot: torch.Tensor, n: int) -> torch.Tensor:
    return (out * cot).sum() / n


def _fsdp_train(payload: dict, shard: dict, cot: torch.Tensor, per: int) -> dict:
    """STEPS SGD steps of FSDP2 on this rank's share; the full parameters (gathered on every
    rank: ``full_tensor`` is a collective) and which ones were sharded."""
    from torch.distributed.fsdp import fully_shard

    module = payload["module"]
    fully_shard(module)
    opt = torch.optim.SGD(module.parameters(), lr=LR)
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        _loss(module(**shard), cot, per).backward()
        opt.step()
    full = {}
    for name, p in module.named_parameters():
        if p.numel() == 0:  # torch 2.13: full_tensor() of a 0-row shard fails an unpad assert
            full[name] = torch.zeros(p.shape)
        else:
            full[name] = (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
    return {"params": full, "sharded": [n for n, p in module.named_parameters() if hasattr(p, "full_tensor")]}


def check_fsdp(case: Case) -> str:
    if case.device.type != "cpu":
        raise SkipCheck("the fsdp check runs on CPU with gloo")
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError as exc:  # torch < 2.6
        raise SkipCheck(f"this torch has no FSDP2 (torch.distributed.fsdp.fully_shard): {exc}") from exc
    overrides = {"dropout": 0.0} if case.has_field("dropout") else {}
    module = case.build(torch.float32, **overrides).train()
    if not any(p.requires_grad for p in module.parameters()):
        raise SkipCheck("the layer has no trainable parameters: nothing for FSDP to shard")
    scalars = [n for n, p in module.named_parameters() if p.ndim == 0]
    if scalars:  # fully_shard shards along dim 0 and refuses 0-dim parameters
        raise SkipCheck(f"FSDP2 cannot shard 0-dim parameters ({', '.join(scalars)}); give them shape (1,) "
                        f"to train the layer under fully_shard")
    world, batch = 2, 4
    inputs = case.inputs(module, batch=batch, query_len=7, context_len=5, dtype=torch.float32)
    cot = torch.randn(inputs["x"].shape, generator=case.generator(59))
    try:
        blob = pickle.dumps({"module": copy.deepcopy(module), "inputs": inputs, "cot": cot})
    except Exception as exc:  # noqa: BLE001
        raise SkipCheck(f"the layer cannot be pickled for worker processes ({type(exc).__name__}: {exc})") from exc
    single = copy.deepcopy(module)
    opt = torch.optim.SGD(single.parameters(), lr=LR)
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        _loss(_run(single, inputs), cot, batch).backward()
        opt.step()
    expected = dict(single.named_parameters())

    got = run_workers(_fsdp_train, world, blob, "FSDP2")
    for name, value in expected.items():
        if name not in got["params"]:
            raise CheckFailed(f"the FSDP2-sharded layer lacks parameter {name!r}")
        compare(got["params"][name], value.detach(), 1e-5, 1e-4,
                f"{name} after {STEPS} SGD steps with FSDP2 over {world} processes vs one process on the whole batch")
    return (f"FSDP2 over {world} gloo processes ({len(got['sharded'])} parameters sharded) "
            f"matches single-process training for {STEPS} steps")
