"""What every sub-command shares, the zoo's and plugins' alike: checks of command-line values
made before any work (each returns why a value cannot work, or ``None``), and the stream
``--json -`` writes to.

A plugin's command imports these from here (``zoo.usage``), not from :mod:`zoo.cli`: the
command line itself is no library.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["json_stdout", "usage_output_path", "usage_seed", "usage_device"]

_JSON_STREAM: list[Any] = []  # the real stdout while `--json -` sends every print to stderr


def json_stdout() -> Any:
    """The stream for ``--json -``: the process's real stdout.

    While a command runs with ``--json -``, ``sys.stdout`` points at stderr, so a
    plugin (or anything else) that prints cannot corrupt the JSON; commands write
    the JSON here, once, at the end.
    """
    return _JSON_STREAM[-1] if _JSON_STREAM else sys.stdout


def usage_output_path(option: str, value: str | None, suffixes: tuple[str, ...] = ()) -> str | None:
    """Why ``value`` cannot be written as an output file (``None``: it can, or it is ``-``
    for an option that takes JSON). ``suffixes``: the endings the format needs (for a
    picture, its format); the first one names the example in messages.

    Checked before any work, so a typo in ``--json`` costs nothing.
    """
    if not value or (value == "-" and not suffixes):
        return None
    example = "out" + (suffixes[0] if suffixes else ".json")
    path = os.path.abspath(value)
    parent = os.path.dirname(path)
    if os.path.isdir(path):
        return f"{option} {value}: is a directory; give a file name such as {os.path.join(value, example)}"
    if suffixes and not value.lower().endswith(suffixes):
        return f"{option} {value}: the file name must end in {' or '.join(suffixes)} (e.g. {example})"
    if not os.path.isdir(parent):
        return f"{option} {value}: the folder {parent} does not exist; create it first"
    if not os.access(parent, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return f"{option} {value}: not writable"
    return None


def usage_seed(option: str, value: int) -> str | None:
    """Why ``value`` is not a seed torch takes (``None``: it is): 0 to 2**63 - 1."""
    if not 0 <= value < 2**63:
        return f"{option} {value}: a seed is a whole number from 0 to {2**63 - 1}"
    return None


def usage_device(option: str, value: str) -> str | None:
    """Why ``value`` is not a device this process can use (``None``: it is)."""
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        return f"{option} {value!r} is not a device; use cpu, cuda or cuda:N"
    if device.type == "meta":
        return f"{option} meta holds no data; use cpu or cuda"
    if device.type == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "no GPU is visible"
        return f"{option} {value}: CUDA is not available ({why}, torch {torch.__version__}); use --device cpu"
    try:
        torch.empty(1, device=device)
    except Exception as exc:  # noqa: BLE001 - any backend failure is a usage error here
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        return f"{option} {value}: not usable here: {first[:200]}"
    return None
