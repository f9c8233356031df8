"""The README holds up on a fresh machine: CI runs its install line, its extras exist,
and every letter of every shape in its variant table is defined next to the table."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import zoo

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BASH = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def _commands(text: str) -> list[str]:
    """The command lines of the ```bash blocks of ``text``, comments dropped."""
    lines = []
    for block in BASH.findall(text):
        for line in block.splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def test_ci_runs_the_quick_start_install_line():
    install = _commands(_section("Quick start"))[0]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert install.startswith("pip install"), install
    assert install in ci, f"the README installs with {install!r} but .ci/run does not run that line"


def test_every_extra_the_docs_name_exists():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
                 ["optional-dependencies"])
    texts = README + (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    named = {extra for line in _commands(texts) if line.startswith("pip install")
             for arg in shlex.split(line) for group in re.findall(r"\[([^\]]+)\]", arg)
             for extra in group.split(",")}
    from_pypi = [line for line in _commands(texts) if line.startswith("pip install") and "attention-zoo" in line]
    assert not from_pypi, f"attention-zoo is not on PyPI: install from the clone ('.[extra]'): {from_pypi}"
    assert {"retro", "diffusers", "transformers", "docs", "dev"} <= named, named
    assert named <= extras, f"the docs install extras pyproject.toml lacks: {sorted(named - extras)}"


def _variant_table() -> tuple[list[list[str]], str]:
    """The rows of the README's variant table, and the paragraph after it."""
    lines = README.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| variant |"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[start + 2:end]]
    after = "\n".join(lines[end:]).strip().split("\n\n")[0]
    return rows, after


def test_every_shape_symbol_in_the_variant_table_is_defined_next_to_it():
    rows, legend = _variant_table()
    assert rows, "no variant table in the README"
    symbols = {"B", "N", "Dq"}  # x is (B, N, Dq): the legend says so too
    for row in rows:
        for shape in re.findall(r"`\(([^)]*)\)`", row[-1]):
            symbols |= {s.strip() for s in shape.split(",") if s.strip()}
    undefined = sorted(s for s in symbols if f"`{s}`" not in legend)
    assert not undefined, f"shape letters used in the README's variant table but not defined below it: {undefined}"
    assert {"L", "K", "R"} <= symbols, "RETRO's (B, L, K, R, Dc) is in the table"


def test_every_built_in_variant_is_in_the_readme_table():
    rows, _ = _variant_table()
    listed = {re.sub(r"[`\s]", "", row[0]) for row in rows}
    built_in = {name for name in zoo.list_variants() if zoo.get_variant(name).distribution == "attention-zoo"}
    assert built_in <= listed, f"built-in variants missing from the README's table: {sorted(built_in - listed)}"
