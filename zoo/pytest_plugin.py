"""The ``zoo`` pytest plugin (entry point ``pytest11``): the harness in any test suite.

It loads in every pytest run of an environment where attention-zoo is installed, so
it imports nothing heavy (no torch, not even ``zoo``) until a test asks for it.

What it adds:

- the marker ``zoo_slow`` (the slow harness checks, ``compile`` and ``ddp``), skipped
  unless ``--zoo-slow`` is given or ``ZOO_RUN_SLOW=1`` is set;
- the option ``--zoo-slow``;
- the fixture ``zoo_registry``: an empty registry (no entry points) installed as the
  default for one test, to register a spec in isolation;
- with :func:`zoo.testing.parametrize_with_checks`, one test per harness check.

Disable it with ``-p no:zoo``.
"""

from __future__ import annotations

import os

import pytest

SLOW_ENV = "ZOO_RUN_SLOW"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("zoo", "attention-zoo harness")
    group.addoption("--zoo-slow", action="store_true", default=False,
                    help="run the slow zoo harness checks (torch.compile, DDP); also ZOO_RUN_SLOW=1")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "zoo_slow: a slow zoo harness check (compile, ddp); runs with --zoo-slow or ZOO_RUN_SLOW=1")


def _slow_enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("--zoo-slow", default=False)) or os.environ.get(SLOW_ENV, "") not in ("", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _slow_enabled(config):
        return
    skip = pytest.mark.skip(reason="slow zoo harness check: run with --zoo-slow or ZOO_RUN_SLOW=1")
    for item in items:
        if item.get_closest_marker("zoo_slow") is not None:
            item.add_marker(skip)


@pytest.fixture
def zoo_registry():
    """An empty :class:`zoo.registry.Registry` installed as the default for one test."""
    from zoo.registry import Registry, use_registry

    registry = Registry(load_entry_points=False, strict=False, env={})
    with use_registry(registry):
        yield registry
