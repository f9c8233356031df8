"""Shared fixtures: fresh registries, and third-party packages installed for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import zoo
from zoo.registry import Registry, use_registry

TESTS = Path(__file__).parent
PACKAGES = TESTS / "packages"


@pytest.fixture(autouse=True)
def _own_cache_dir(tmp_path_factory, monkeypatch):
    """Each test its own cache folder (zoo compare's cached floors, the cached listing): no test
    reads another's results, nor the user's."""
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path_factory.mktemp("zoo-cache")))


@pytest.fixture
def registry():
    """An empty registry (no entry points) installed as the default for one test."""
    reg = Registry(load_entry_points=False, strict=False, env={})
    with use_registry(reg):
        yield reg


@pytest.fixture
def cross_registry(registry):
    """A fresh registry holding only the built-in `cross` plugin."""
    from attention_zoo_plugins.variants import cross

    registry.load_plugin(cross, name="cross", distribution="attention-zoo")
    return registry


def pip_install_target(target: Path, *packages: Path) -> None:
    """Install packages for real (wheel build, dist-info, entry points) into ``target``."""
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
           "--no-index", "--target", str(target), *map(str, packages)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@pytest.fixture(scope="session")
def thirdparty_site(tmp_path_factory) -> Path:
    """A site directory holding the demo plugin and the broken plugin, installed with pip."""
    target = tmp_path_factory.mktemp("site")
    pip_install_target(target, PACKAGES / "zoo-demo-multiquery", PACKAGES / "zoo-broken-plugin")
    return target


def run_zoo(*args: str, site: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m zoo ARGS`` in a fresh process (optionally with an extra site dir), with the
    test's own cache folder (``ZOO_CACHE_DIR``) and no other ``ZOO_`` variable unless given."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_") or k == "ZOO_CACHE_DIR"}
    if site is not None:
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), full_env.get("PYTHONPATH")]))
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True,
                          env=full_env, timeout=300)


@pytest.fixture
def zoo_cli():
    return run_zoo


@pytest.fixture
def tiny_spec(cross_registry):
    return zoo.get_variant("cross")


@pytest.fixture(scope="session")
def harness_reports():
    """``zoo.check`` over every registered variant, once per test session: ``{name: CheckReport}``.

    The harness, catalog and docs tests all read this one run (the docs build gets it
    through ``ZOO_DOCS_HARNESS``) instead of checking every variant again."""
    return {name: zoo.check(name) for name in zoo.list_variants()}


@pytest.fixture(scope="session")
def harness_summaries(harness_reports):
    """The catalog's summaries of :func:`harness_reports`: ``{name: HarnessSummary}``."""
    from zoo.catalog import HarnessSummary

    return {name: HarnessSummary.from_report(r) for name, r in harness_reports.items()}
