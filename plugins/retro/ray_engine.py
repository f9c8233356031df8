"""The Ray engine of the staged build (:mod:`~.build`): ``zoo retro build ... --engine ray``.

Imported only when that engine is asked for; Ray is the optional extra
``pip install "attention-zoo[retro-ray]"``.

- embed: a pool of ``workers`` actors (``ray.util.ActorPool``), each holding one copy
  of the embedder (MiniLM loads once per actor, not once per shard), maps the shards;
  each writes its ``emb-<s>.npy`` itself, so a finished shard survives a killed build.
  An embedder on a CUDA device (``MiniLMEmbedder(device="cuda")``, ``--device cuda``)
  gets one GPU per actor (Ray points each actor's ``cuda`` at its own GPU), as many
  actors as the cluster has GPUs.
- add: one Ray task per shard reads the trained index and the shard's embeddings from
  the work directory and writes ``index-<s>.faiss``.

Why not Ray Data ``map_batches``: the build's unit of resumption is a shard *file*,
written by the worker that computed it; Ray Data's streaming executor hands results
back as blocks (to be written by a sink, with its own, coarser, fault tolerance), and
pulls in pyarrow and pandas (about 150 MB) for no gain on one machine. An actor pool
is what ``map_batches(..., compute=ActorPoolStrategy)`` runs underneath.

The work directory must be visible to every worker: on one machine it is; on a
cluster, put it on a shared file system (``work_dir=``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["RayEngine", "import_ray", "actor_resources"]

EXTRA = "attention-zoo[retro-ray]"


def import_ray() -> Any:
    """``ray``, or an ImportError naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"--engine ray needs Ray, which is not installed: pip install '{EXTRA}' "
                          f"(or use --engine local)") from exc
    return ray


def actor_resources(embedder: Any) -> dict[str, int]:
    """What one embedding actor asks Ray for: a CPU, and a GPU when the embedder runs on CUDA."""
    on_gpu = str(getattr(embedder, "device", "cpu")).startswith("cuda")
    return {"num_cpus": 1, "num_gpus": 1} if on_gpu else {"num_cpus": 1}


def _embed_actor(ray: Any) -> Any:
    @ray.remote
    class Embedder:
        def __init__(self, embedder: Any) -> None:
            import torch

            torch.set_num_threads(1)
            self.embedder = embedder

        def run(self, chunks: Any, path: str) -> int:
            from attention_zoo_plugins.retro.build import embed_shard

            return embed_shard(self.embedder, chunks, path)

    return Embedder


class RayEngine:
    """Run the build's shards on Ray: ``ray.init(address)`` unless Ray is already up."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        self.ray = ray = import_ray()
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level="WARNING", configure_logging=True)
        cpus = int(ray.available_resources().get("CPU", 1)) or 1
        self.workers = max(1, min(cpus, workers or cpus))

    def embed(self, embedder: Any, jobs: list[tuple[Any, str]], on_done: Callable[[int], None]) -> None:
        if not jobs:
            return
        from ray.util import ActorPool

        ray = self.ray
        ref = ray.put(embedder)
        need = actor_resources(embedder)
        size = min(self.workers, len(jobs))
        if need.get("num_gpus"):
            gpus = int(ray.available_resources().get("GPU", 0))
            if gpus < 1:
                raise ValueError(f"the embedder runs on {embedder.device!r} but the Ray cluster has no free GPU; "
                                 f"embed on the CPU (--device cpu) or connect to a cluster with GPUs (--address)")
            size = min(size, gpus)
        actor = _embed_actor(ray).options(**need)
        pool = ActorPool([actor.remote(ref) for _ in range(size)])
        for k in pool.map_unordered(lambda a, job: a.run.remote(*job), jobs):
            on_done(k)

    def add(self, jobs: list[tuple[str, str, str]], on_done: Callable[[int], None]) -> None:
        ray = self.ray

        @ray.remote(num_cpus=1)
        def add(trained: str, emb: str, out: str) -> int:
            import faiss

            from attention_zoo_plugins.retro.build import add_shard

            faiss.omp_set_num_threads(1)
            return add_shard(trained, emb, out)

        pending = [add.remote(*job) for job in jobs]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            on_done(ray.get(ready[0]))

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
