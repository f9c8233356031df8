"""The slow checks (``slow=True`` / ``zoo check --slow``).

- ``compile``: ``torch.compile(layer)`` gives the eager output and gradients (float32).
  The backend is ``inductor`` when a C++ compiler is on PATH, else ``aot_eager``
  (override with ``ZOO_COMPILE_BACKEND``).
- ``ddp``: one SGD step of ``DistributedDataParallel`` over two processes (gloo, on
  127.0.0.1, each with half the batch) ends with the same parameters as the same step
  taken by one process on the whole batch. The layer is pickled to the workers, so its
  class must be importable by name.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import shutil
import socket
import tempfile
import traceback
from pathlib import Path

import torch

from zoo.harness.case import Case, CheckFailed, SkipCheck, _detached, _run, compare

__all__ = ["check_compile", "check_ddp"]

DDP_TIMEOUT_S = float(os.environ.get("ZOO_DDP_TIMEOUT_S", "180"))
LR = 0.1


def _backend() -> str:
    env = os.environ.get("ZOO_COMPILE_BACKEND")
    if env:
        return env
    return "inductor" if (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")) else "aot_eager"


def _grads(module: torch.nn.Module, inputs: dict, fn, cot: torch.Tensor):
    g_inputs = _detached(inputs, grad=True)
    module.zero_grad(set_to_none=True)
    out = fn(**g_inputs)
    (out * cot).sum().backward()
    grads = {f"input {k!r}": v.grad for k, v in g_inputs.items() if isinstance(v, torch.Tensor) and v.requires_grad}
    grads.update({f"parameter {n!r}": p.grad for n, p in module.named_parameters()})
    return out.detach(), grads


def check_compile(case: Case) -> str:
    backend = _backend()
    module = case.build(torch.float32)
    inputs = case.inputs(module, batch=2, query_len=7, context_len=5, dtype=torch.float32)
    cot = torch.randn(inputs["x"].shape, generator=case.generator(31)).to(case.device)
    eager_out, eager_grads = _grads(module, inputs, module, cot)
    from torch import _dynamo

    _dynamo.reset()
    quiet = logging.getLogger("torch._dynamo")  # graph-break warnings would bury the table
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        compiled = torch.compile(module, backend=backend)
        comp_out, comp_grads = _grads(module, inputs, compiled, cot)
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"torch.compile(backend={backend!r}) failed: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    finally:
        quiet.setLevel(level)
        _dynamo.reset()
    compare(comp_out, eager_out, 1e-5, 1e-4, f"compiled ({backend}) output vs eager")
    for what, g in eager_grads.items():
        cg = comp_grads.get(what)
        if g is None and cg is None:
            continue
        if g is None or cg is None:
            raise CheckFailed(f"compiled ({backend}) {what} gradient is {cg is None and 'None' or 'set'} "
                              f"but eager's is {g is None and 'None' or 'set'}")
        compare(cg, g, 1e-5, 1e-4, f"compiled ({backend}) gradient of {what} vs eager")
    return f"compiled with {backend}: same output and gradients"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(train, world: int, blob: bytes, what: str) -> dict:
    """Run ``train(payload, shard, cot, rows_per_rank)`` on ``world`` spawned gloo ranks (see
    :func:`_worker`) over the pickled ``blob``; return what rank 0's ``train`` returned.
    ``train`` must be a module-level function (spawn pickles it by name).

    Raises:
        CheckFailed: a worker failed (its last line), hung past ``DDP_TIMEOUT_S`` or exited
            without finishing; ``what`` names the kind of training in the message.
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="zoo-workers-") as tmp:
        payload = os.path.join(tmp, "payload.pkl")
        Path(payload).write_bytes(blob)
        ctx = mp.get_context("spawn")
        port = _free_port()
        procs = [ctx.Process(target=_worker, args=(train, r, world, port, payload, tmp), daemon=True)
                 for r in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(DDP_TIMEOUT_S)
        hung = [i for i, p in enumerate(procs) if p.is_alive()]
        for i in hung:
            procs[i].kill()
            procs[i].join(5)
        errors = sorted(Path(tmp).glob("error-*.txt"))
        if errors:
            tail = errors[0].read_text().strip().splitlines()[-1]
            raise CheckFailed(f"a {what} worker failed: {tail}")
        if hung:
            raise CheckFailed(f"{what} worker(s) {hung} did not finish within {DDP_TIMEOUT_S:g} s")
        if not all(Path(tmp, f"done-{r}").exists() for r in range(world)):
            raise CheckFailed(f"{what} workers exited with status {[p.exitcode for p in procs]}")
        return torch.load(os.path.join(tmp, "state.pt"), weights_only=True)


def _share(rank: int, world: int, payload_path: str) -> tuple[dict, dict, torch.Tensor, int]:
    """In a worker: one thread, the pickled payload (``module``, ``inputs``, ``cot``, ...),
    and this rank's share of the batch: ``(payload, inputs, cot, rows per rank)``."""
    torch.set_num_threads(1)
    with open(payload_path, "rb") as fh:
        payload = pickle.load(fh)
    inputs, cot = payload["inputs"], payload["cot"]
    batch = inputs["x"].shape[0]
    per = batch // world
    lo, hi = rank * per, (rank + 1) * per
    shard = {k: (v[lo:hi] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == batch else v)
             for k, v in inputs.items()}
    return payload, shard, cot[lo:hi], per


def _worker(train, rank: int, world: int, port: int, payload_path: str, out_dir: str) -> None:
    """One rank: join the gloo group, ``train`` on this rank's share, rank 0 saves what it
    returns as ``state.pt``; every rank leaves ``done-<rank>``, or ``error-<rank>.txt``."""
    try:
        import torch.distributed as dist

        payload, shard, cot, per = _share(rank, world, payload_path)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        try:
            state = train(payload, shard, cot, per)
            if rank == 0:
                torch.save(state, os.path.join(out_dir, "state.pt"))
            dist.barrier()
        finally:
            dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - reported by the parent
        Path(out_dir, f"error-{rank}.txt").write_text(traceback.format_exc())
        raise
    Path(out_dir, f"done-{rank}").touch()
    # Skip interpreter teardown: gloo's threads can abort it ("terminate called without an
    # active exception"), which says nothing about the layer.
    os._exit(0)


def _ddp_train(payload: dict, shard: dict, cot: torch.Tensor, per: int) -> dict:
    """One SGD step of DDP on this rank's share; the (replicated) state dict."""
    from torch.nn.parallel import DistributedDataParallel

    module = payload["module"]
    ddp = DistributedDataParallel(module, find_unused_parameters=payload["find_unused"])
    opt = torch.optim.SGD(ddp.parameters(), lr=LR)
    ((ddp(**shard) * cot).sum() / per).backward()
    opt.step()
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def check_ddp(case: Case) -> str:
    if case.device.type != "cpu":
        raise SkipCheck("the ddp check runs on CPU with gloo")
    overrides = {"dropout": 0.0} if case.has_field("dropout") else {}
    module = case.build(torch.float32, **overrides).train()
    world, batch = 2, 4
    inputs = case.inputs(module, batch=batch, query_len=7, context_len=5, dtype=torch.float32)
    cot = torch.randn(inputs["x"].shape, generator=case.generator(57))
    single = copy.deepcopy(module)
    opt = torch.optim.SGD(single.parameters(), lr=LR)
    out = _run(single, inputs)
    ((out * cot).sum() / batch).backward()
    find_unused = any(p.grad is None for p in single.parameters() if p.requires_grad)
    opt.step()
    expected = single.state_dict()
    try:
        blob = pickle.dumps({"module": copy.deepcopy(module), "inputs": inputs, "cot": cot,
                             "find_unused": find_unused})
    except Exception as exc:  # noqa: BLE001
        raise SkipCheck(f"the layer cannot be pickled for worker processes ({type(exc).__name__}: {exc})") from exc

    got = run_workers(_ddp_train, world, blob, "DDP")
    for name, value in expected.items():
        if name not in got:
            raise CheckFailed(f"the DDP state dict lacks {name!r}")
        compare(got[name], value, 1e-5, 1e-4,
                f"{name} after one SGD step with DDP over {world} processes vs one process on the whole batch")
    return f"DDP over {world} gloo processes matches single-process training"
