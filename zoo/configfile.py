"""Reading config files safely: bounded size and depth, no YAML aliases, clear errors.

:func:`read_config_file` turns a ``.yaml``/``.yml``/``.json``/``.toml`` file into
plain data, or raises ``ValueError`` naming the file (and the line where the
parser knows it). The limits keep a tiny hostile file from costing seconds,
gigabytes or a ``RecursionError``:

- at most :data:`MAX_CONFIG_BYTES` bytes (a real config is a few hundred);
- at most :data:`MAX_DEPTH` levels of nesting;
- YAML aliases (``*name``) are refused: a 357-byte "billion laughs" file of
  nested aliases would otherwise expand into billions of items the moment
  anything (a validator, an error message) walks it.

YAML is parsed as plain data (the safe loader, libyaml's when installed): tags
that would build Python objects are refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["MAX_CONFIG_BYTES", "MAX_DEPTH", "ConfigFileNotFoundError", "read_config_file", "check_depth"]

MAX_CONFIG_BYTES = 64 * 1024
MAX_DEPTH = 32


class ConfigFileNotFoundError(FileNotFoundError, ValueError):
    """No config file at the path: a ``FileNotFoundError`` (as ``open`` raises) that is also
    a ``ValueError``, like every other failure to read a config file."""


def _read_text(path: Path) -> str:
    if not path.exists():
        raise ConfigFileNotFoundError(2, f"{path}: no such config file; check the path "
                                         f"(relative paths start at {os.getcwd()})", str(path))
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise ValueError(f"{path}: is {kind}; give the path of a .yaml, .json or .toml config file")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(
            f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB, the limit for a config file "
            f"(a layer's config is a few hundred bytes); is this the right file?"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}: not UTF-8 text (byte {exc.start} is {data[exc.start:exc.start + 1]!r}); "
            f"save the config as UTF-8"
        ) from None


def check_depth(data: Any, where: str, limit: int = MAX_DEPTH) -> None:
    """Refuse data nested deeper than ``limit`` (iteratively: no recursion)."""
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children = list(item.values())
        elif isinstance(item, (list, tuple)):
            children = list(item)
        else:
            continue
        if depth > limit:
            raise ValueError(f"{where}: nested more than {limit} levels deep; a config is a flat mapping")
        stack.extend((c, depth + 1) for c in children)


def _load_yaml(path: Path, text: str) -> Any:
    import yaml

    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_cls(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        # Walk the node graph once: an alias is a node reached twice.
        seen: set[int] = set()
        stack = [(node, 1)]
        while stack:
            current, depth = stack.pop()
            if id(current) in seen:
                mark = current.start_mark
                raise ValueError(
                    f"{path}:{mark.line + 1}: YAML aliases (*name) are not allowed in config "
                    f"files; write the value out"
                )
            seen.add(id(current))
            if isinstance(current, yaml.MappingNode):
                children = [n for pair in current.value for n in pair]
                keys: set = set()
                for key, _ in current.value:
                    if isinstance(key, yaml.ScalarNode) and (key.tag, key.value) in keys:
                        raise ValueError(f"{path}:{key.start_mark.line + 1}: the key {key.value!r} appears twice "
                                         f"in one mapping; keep one (YAML would silently take the last)")
                    if isinstance(key, yaml.ScalarNode):
                        keys.add((key.tag, key.value))
            elif isinstance(current, yaml.SequenceNode):
                children = list(current.value)
            else:
                continue
            if depth > MAX_DEPTH:
                raise ValueError(f"{path}: nested more than {MAX_DEPTH} levels deep; a config is a flat mapping")
            stack.extend((c, depth + 1) for c in children)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise ValueError(f"{path}{line}: invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML: {str(exc)[:200]}") from None
    finally:
        loader.dispose()


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    data: dict = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"the key {key!r} appears twice in one object; keep one (the parser "
                             f"would silently take the last)")
        data[key] = value
    return data


def read_config_file(path: str | os.PathLike) -> Any:
    """The plain data in a config file (usually a mapping); bad files raise ``ValueError``.

    Raises:
        ConfigFileNotFoundError: no file at ``path`` (a ``FileNotFoundError`` and a ``ValueError``).
        ValueError: a directory, unreadable, too large, not UTF-8, malformed, nested too
            deeply, YAML aliases, a key given twice, a number the parser refuses, or an
            unsupported suffix; the message names the file.
    """
    path = Path(path)
    text = _read_text(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json", ".toml"):
        raise ValueError(f"{path}: unsupported config format {suffix!r}; use .yaml, .yml, .json or .toml")
    try:
        if suffix in (".yaml", ".yml"):
            data = _load_yaml(path, text)
        elif suffix == ".json":
            try:
                data = json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        else:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ValueError(f"{path}: nested too deeply to parse; a config is a flat mapping") from None
    except ValueError as exc:  # the parsers' own (e.g. an integer of more than 4,300 digits)
        if str(path) in str(exc):
            raise
        raise ValueError(f"{path}: cannot be parsed: {' '.join(str(exc).split())[:300]}") from None
    check_depth(data, str(path))
    return data
