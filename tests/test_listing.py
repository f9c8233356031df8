"""The cached listing (zoo/listing.py): `zoo list/show/schema/plugins/--help/--version`
answer without importing torch, and a stale cache never shows a variant that is gone nor
hides one that came."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PACKAGES, pip_install_target, run_zoo

DEMO = "demo-multiquery"
# main() in a fresh process; prints whether torch was imported (on stderr, after the answer)
PROBE = "import sys; from zoo.cli import main; rc = main(sys.argv[1:]); print('TORCH', 'torch' in sys.modules, file=sys.stderr); raise SystemExit(rc)"


def probe(*args: str, site: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_") or k == "ZOO_CACHE_DIR"}
    if site is not None:
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), full_env.get("PYTHONPATH")]))
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=full_env,
                          timeout=300)


def imported_torch(result: subprocess.CompletedProcess) -> bool:
    return "TORCH True" in result.stderr


@pytest.mark.slow
def test_light_commands_answer_from_the_cache_without_torch():
    first = probe("list")
    assert first.returncode == 0 and imported_torch(first)  # a miss: plugins loaded, listing stored
    for args in (["list"], ["show", "cross-attention"], ["schema", "cross"], ["plugins"], ["--help"]):
        again = probe(*args)
        assert again.returncode == 0, again.stderr
        assert not imported_torch(again), args
    shown = probe("show", "cross-attention")
    assert shown.stdout.startswith("cross — ")  # the alias resolves to the canonical name
    unknown = probe("show", "crss")
    assert unknown.returncode == 2 and "did you mean 'cross'" in unknown.stderr and not imported_torch(unknown)
    helped = probe("--help")
    assert "check" in helped.stdout and "retro" in helped.stdout  # a plugin's command, from the cache


@pytest.mark.slow
def test_cached_answers_equal_the_live_ones():
    for args in (["list"], ["show", "selfdoc"], ["schema", "film"], ["list", "cr"]):
        live = run_zoo(*args)
        cached = run_zoo(*args)
        off = run_zoo(*args, env={"ZOO_CACHE_DIR": ""})
        assert live.stdout == cached.stdout == off.stdout and live.returncode == cached.returncode == 0


def test_version_and_help_never_import_torch(tmp_path):
    for args in (["--version"], ["--help"], []):
        result = probe(*args, env={"ZOO_CACHE_DIR": str(tmp_path / "empty")})  # a miss
        assert not imported_torch(result), (args, result.stderr)
        assert result.returncode == 0
    assert "attention-zoo" in probe("--version").stdout
    assert "Plugins may add commands" in probe("--help", env={"ZOO_CACHE_DIR": str(tmp_path / "empty")}).stdout


@pytest.mark.slow
def test_a_stale_cache_never_hides_a_plugin_that_came_nor_shows_one_that_went(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    before = run_zoo("list", site=site)  # cached without the plugin
    assert before.returncode == 0 and DEMO not in before.stdout
    pip_install_target(site, PACKAGES / "zoo-demo-multiquery")
    came = probe("list", site=site)
    assert DEMO in came.stdout, came.stderr
    assert DEMO in probe("list", site=site).stdout  # and now from the cache
    for entry in site.iterdir():  # uninstalled
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    gone = probe("list", site=site)
    assert gone.returncode == 0 and DEMO not in gone.stdout


@pytest.mark.slow
def test_an_edited_plugin_file_is_seen(tmp_path):
    """An editable install changes only its files: their size and time are in the key."""
    site = tmp_path / "site"
    pip_install_target(site, PACKAGES / "zoo-demo-multiquery")
    old = "Multi-query cross-attention"
    assert old in run_zoo("show", DEMO, site=site).stdout
    assert old in run_zoo("show", DEMO, site=site).stdout  # cached
    module = site / "zoo_demo_multiquery.py"
    module.write_text(module.read_text().replace(old, "Edited summary"))
    edited = run_zoo("show", DEMO, site=site)
    assert "Edited summary" in edited.stdout and old not in edited.stdout


def test_the_key_follows_the_environment(monkeypatch):
    from zoo.listing import listing_key

    monkeypatch.delenv("ZOO_LOAD_PLUGINS", raising=False)
    everything = listing_key()
    monkeypatch.setenv("ZOO_LOAD_PLUGINS", "cross")
    assert listing_key() != everything
    monkeypatch.delenv("ZOO_LOAD_PLUGINS")
    assert listing_key() == everything


def test_an_unreadable_or_foreign_entry_is_a_miss(tmp_path, monkeypatch):
    from zoo.listing import Listing, load_listing, store_listing

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    (tmp_path / "listing").mkdir()
    (tmp_path / "listing" / "k.json").write_text("{not json")
    assert load_listing("k") is None
    (tmp_path / "listing" / "k.json").write_text('{"format": 999}')
    assert load_listing("k") is None
    store_listing("k", Listing({"v": {"summary": "s"}}, {"a": "v"}, []))
    assert load_listing("k").get("a") == {"summary": "s"}
    monkeypatch.setenv("ZOO_CACHE_DIR", "")
    assert load_listing("k") is None
