"""Saving and loading layers: config plus weights in one file, safely.

``zoo.save(layer, path)`` writes the validated config (as JSON text) and the state
dict with ``torch.save``; the write goes to a temporary file in the same folder
and is moved into place with ``os.replace``, so a crash mid-write never damages a
file already there. ``zoo.load(path)`` reads it back with
``torch.load(weights_only=True)`` (no arbitrary pickle: a tampered file cannot run
code), checks the format tag, rebuilds the layer from its config with
:func:`zoo.create` (only registered variants) and loads the weights strictly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

FORMAT = "attention-zoo/layer/1"

__all__ = ["save", "load", "atomic_write"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync and move it into place.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _digest(state: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(-1).view(__import__("torch").uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save(module: Any, path: str | os.PathLike) -> Path:
    """Write ``module`` (built by :func:`zoo.create`, so it has ``.config``) to ``path``."""
    import torch

    config = getattr(module, "config", None)
    if config is None or not hasattr(config, "model_dump_json"):
        raise ValueError(
            "zoo.save needs a layer built by zoo.create (it has no .config); "
            "build it with zoo.create(name, **fields)"
        )
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    payload = {"format": FORMAT, "config": config.model_dump_json(), "sha256": _digest(state), "state_dict": state}
    with atomic_write(path) as handle:
        torch.save(payload, handle)
    return Path(path)


def load(path: str | os.PathLike, *, map_location: Any = "cpu") -> Any:
    """Read a layer written by :func:`save`; a missing, truncated, tampered or foreign
    file raises a clear error naming it."""
    import pickle
    import zipfile

    import torch

    from zoo.config import create

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved layer at {str(path)!r}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as exc:
        raise ValueError(
            f"{path}: not a readable zoo layer file (truncated, corrupt, or holding objects other "
            f"than tensors and plain data, which are refused for safety): {str(exc).splitlines()[0]}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: expected a file written by zoo.save (format {FORMAT!r}), found {found!r}")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or _digest(state) != payload.get("sha256"):
        raise ValueError(f"{path}: the weights do not match their checksum (the file was modified or damaged)")
    module = create(json.loads(payload["config"]))
    module.load_state_dict(state, strict=True)
    return module.to(map_location) if map_location is not None else module
