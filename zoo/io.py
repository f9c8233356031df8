"""Saving and loading layers: config plus weights in one file, safely.

``zoo.save(layer, path)`` writes the validated config (as JSON text) and the state
dict with ``torch.save``; the write goes to a temporary file in the same folder
and is moved into place with ``os.replace``, so a crash mid-write never damages a
file already there, and concurrent saves to one path leave exactly one of the
complete files (the last to finish) and no temporary file. The SHA-256 stored
with it covers the config *and* the weights: everything that decides the layer.

``zoo.load(path)`` reads it back with ``torch.load(weights_only=True)`` (no
arbitrary pickle: a tampered file cannot run code) onto the CPU, validates every
field (types, sizes, the checksum), rebuilds the layer from its config with
:func:`zoo.create` (only registered variants), loads the weights strictly, then
moves the layer to ``map_location``. Every failure is a ``ValueError`` naming the
file and the field, with any value it shows cut short.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from zoo.errors import short_repr

FORMAT = "attention-zoo/layer/2"
_FORMAT_V1 = "attention-zoo/layer/1"  # checksum over the weights only; still read, with a warning
MAX_CONFIG_CHARS = 64 * 1024

__all__ = ["save", "load", "atomic_write"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync and move it into place.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file path such as {path / 'layer.pt'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; a saved file follows the umask like open()'s
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def _digest(state: dict, config: str | None) -> str:
    import torch

    h = hashlib.sha256()
    if config is not None:
        h.update(b"config\0" + config.encode("utf-8") + b"\0")
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _twin(config: Any) -> Any:
    """The layer ``config`` describes, built on the meta device (no memory), or ``None``
    when the variant cannot be built there."""
    import torch

    from zoo.config import create

    try:
        with torch.device("meta"):
            return create(config)
    except Exception:  # noqa: BLE001 - a layer that cannot be built on meta: nothing to compare
        return None


def _structure(module: Any) -> tuple[dict, dict]:
    """``({state key: shape}, {submodule path: class})``: what a config decides."""
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    return shapes, {name: type(m) for name, m in module.named_modules()}


def _check_matches_config(module: Any, config: Any) -> None:
    """Refuse to save a layer whose parameters or submodules no longer fit its config."""
    twin = _twin(config)
    if twin is None:
        return
    (want, want_types), (have, have_types) = _structure(twin), _structure(module)
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))
        raise ValueError(
            f"zoo.save: the layer's weights do not match its config (was the layer changed after "
            f"zoo.create?); differing entries: {short_repr(diff, 300)}"
        )
    if want_types != have_types:
        diff = sorted((n, getattr(have_types.get(n), "__name__", None), getattr(t, "__name__", None))
                      for n, t in want_types.items() if have_types.get(n) is not t)
        diff += sorted((n, t.__name__, None) for n, t in have_types.items() if n not in want_types)
        raise ValueError(
            f"zoo.save: the layer's submodules are not the ones its config builds (replaced after "
            f"zoo.create?), so loading would give another function; (path, found, expected): "
            f"{short_repr(diff, 300)}"
        )


def save(module: Any, path: str | os.PathLike) -> Path:
    """Write ``module`` (built by :func:`zoo.create`, so it has ``.config``) to ``path``.

    Raises:
        ValueError: ``module`` has no zoo config, its weights no longer fit it, or
            ``path`` is a directory.
    """
    import torch

    config = getattr(module, "config", None)
    if config is None or not hasattr(config, "model_dump_json"):
        raise ValueError(
            "zoo.save needs a layer built by zoo.create (it has no .config); "
            "build it with zoo.create(name, **fields)"
        )
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"zoo.save: {path} is a directory; give a file path such as {path / 'layer.pt'}")
    _check_matches_config(module, config)
    text = config.model_dump_json()
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    payload = {"format": FORMAT, "config": text, "sha256": _digest(state, text), "state_dict": state}
    with atomic_write(path) as handle:
        torch.save(payload, handle)
    return path


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _device(path: Path, map_location: Any) -> Any:
    import torch

    if map_location is None:
        return None
    if not isinstance(map_location, (str, torch.device)):
        raise ValueError(f"{path}: map_location must be a device such as 'cpu' or 'cuda:0', "
                         f"got {type(map_location).__name__}")
    try:
        device = torch.device(map_location)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{path}: map_location {short_repr(map_location)} is not a device: {_clip(exc)}") from None
    if device.type == "meta":
        raise ValueError(f"{path}: map_location='meta' would load no data; load onto 'cpu' (or a GPU), "
                         f"or build an empty layer with zoo.create under torch.device('meta')")
    return device


def _check_archive(path: Path) -> None:
    """torch.save stores its archive's entries uncompressed, so nothing in a file zoo.save
    wrote is larger than the file. Refuse compressed entries before reading any: a small
    deflated file can inflate to gigabytes."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            packed = [i.filename for i in archive.infolist() if i.compress_type != zipfile.ZIP_STORED]
    except (zipfile.BadZipFile, OSError):
        return  # not an archive: torch.load refuses it below
    if packed:
        raise ValueError(f"{path}: not a file written by zoo.save: entry {short_repr(packed[0])} is compressed "
                         f"(torch.save stores entries uncompressed), and would be inflated without bound")


def _read_payload(path: Path) -> dict:
    import torch

    if not path.exists():
        raise FileNotFoundError(f"no saved layer at {str(path)!r}")
    if not path.is_file():
        raise ValueError(f"{path}: not a file (a directory?); give the path zoo.save wrote")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (an interrupted copy?); not a zoo layer file")
    _check_archive(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every reader failure is the file's fault
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(
            f"{path}: not a readable zoo layer file (truncated, corrupt, or holding objects other "
            f"than tensors and plain data, which are refused for safety): {_clip(first, 200)}"
        ) from None
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt not in (FORMAT, _FORMAT_V1):
        found = short_repr(fmt) if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: expected a file written by zoo.save (field 'format' = {FORMAT!r}), found {found}")
    return payload


def _read_config(path: Path, payload: dict) -> tuple[str, dict]:
    from zoo.configfile import check_depth

    text = payload.get("config")
    if not isinstance(text, str):
        raise ValueError(f"{path}: field 'config' must be JSON text, found {type(text).__name__}")
    if len(text) > MAX_CONFIG_CHARS:
        raise ValueError(f"{path}: field 'config' is {len(text)} characters, over the limit of {MAX_CONFIG_CHARS}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: field 'config' is not valid JSON: {exc.msg} at character {exc.pos}") from None
    except RecursionError:
        raise ValueError(f"{path}: field 'config' is nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: field 'config' must be a JSON object, found {type(data).__name__}")
    check_depth(data, f"{path}: field 'config'")
    return text, data


def _read_state(path: Path, payload: dict, config_text: str) -> dict:
    import torch

    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise ValueError(f"{path}: field 'state_dict' must be a mapping of tensors, found {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            raise ValueError(f"{path}: field 'state_dict' must map names to dense tensors, found "
                             f"{short_repr(key)}: {type(value).__name__}")
        if value.numel() and value.untyped_storage().nbytes() < value.numel() * value.element_size():
            # an expanded or overlapping view: a few bytes on disk, any size in memory
            raise ValueError(f"{path}: field 'state_dict' entry {short_repr(key)} of shape {tuple(value.shape)} "
                             f"is a view on {value.untyped_storage().nbytes()} bytes (expanded or overlapping), "
                             f"which zoo.save never writes")
    v1 = payload["format"] == _FORMAT_V1
    try:
        digest = _digest(state, None if v1 else config_text)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: field 'state_dict' holds a tensor that cannot be checked: {_clip(exc)}") from None
    if digest != payload.get("sha256"):
        covered = "weights" if v1 else "config and weights"
        raise ValueError(f"{path}: the {covered} do not match their checksum (field 'sha256'): "
                         f"the file was modified or damaged")
    if v1:
        warnings.warn(f"{path}: an older zoo layer file whose checksum covers the weights but not the "
                      f"config; save it again (zoo.save) to protect both", UserWarning, stacklevel=3)
    return state


def _check_sizes(path: Path, data: dict, state: dict) -> None:
    """Compare the weights with the layer the config describes, built on the meta device,
    before the real one is allocated: a config asking for huge widths costs nothing here."""
    twin = _twin(data)  # None for a config that does not validate: zoo.create says why below
    if twin is None:
        return
    want, have = _structure(twin)[0], {k: tuple(v.shape) for k, v in state.items()}
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))
        raise ValueError(f"{path}: the weights (field 'state_dict') do not fit the config {short_repr(data, 200)}; "
                         f"differing (name, shape): {short_repr(diff, 300)}")


def load(path: str | os.PathLike, *, map_location: Any = "cpu") -> Any:
    """Read a layer written by :func:`save`.

    Args:
        path: the file.
        map_location: the device to put the layer on (``"cpu"``, ``"cuda:0"``, a
            ``torch.device``); ``None`` leaves it on the CPU.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: anything wrong with the file (empty, truncated, foreign, tampered,
            a config that does not validate or does not fit the weights) or with
            ``map_location``; the message names the file and the field.
    """
    from zoo.config import create
    from zoo.errors import UnknownVariantError, UnknownVariantInFileError

    path = Path(path)
    device = _device(path, map_location)
    payload = _read_payload(path)
    text, data = _read_config(path, payload)
    state = _read_state(path, payload, text)
    _check_sizes(path, data, state)
    try:
        module = create(data)
    except UnknownVariantError as exc:
        raise UnknownVariantInFileError(path, exc) from None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: field 'config' does not validate: {_clip(exc, 500)}") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: the weights (field 'state_dict') do not fit the config "
                         f"{short_repr(data, 200)}: {_clip(exc, 400)}") from None
    if device is None:
        return module
    try:
        return module.to(device)
    except (RuntimeError, AssertionError) as exc:  # torch asserts when a backend is missing
        raise ValueError(f"{path}: cannot move the layer to {device}: {_clip(exc, 200)}") from None
