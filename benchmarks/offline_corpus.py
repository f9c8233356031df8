"""Write an English text corpus from what is installed on this machine (no network), for
``zoo retro build`` at a million chunks and more (benchmarks/RESULTS-retrieval.md).

Sources, in this order, until ``--mb`` megabytes: every ``*.txt``, ``*.md`` and ``*.rst``
file of at least 4 KB under the Python standard library, the active environment's
site-packages and /usr/share/doc; then the docstrings (at least 200 characters) of every
module, class and function under the same Python trees. Written as ``part-NNN.txt`` files
of blank-line separated paragraphs (``zoo retro build DIR --split paragraph``).

    python benchmarks/offline_corpus.py /work/scratch-retro/corpus --mb 80
"""

from __future__ import annotations

import argparse
import ast
import re
import site
import sysconfig
from pathlib import Path


def sources() -> list[Path]:
    roots = [Path(sysconfig.get_paths()["stdlib"]), *map(Path, site.getsitepackages())]
    return [r for r in roots if r.is_dir()]


def texts(max_chars: int):
    seen = 0
    for root in [*sources(), Path("/usr/share/doc")]:
        for f in sorted(root.rglob("*")):
            if f.suffix in (".txt", ".md", ".rst") and f.is_file() and f.stat().st_size >= 4096:
                try:
                    t = f.read_text(encoding="utf-8")
                except (UnicodeDecodeError, OSError):
                    continue
                seen += len(t)
                yield t
                if seen >= max_chars:
                    return
    for root in sources():
        for f in sorted(root.rglob("*.py")):
            try:
                tree = ast.parse(f.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= 200:
                        seen += len(doc)
                        yield doc
                        if seen >= max_chars:
                            return


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("--mb", type=float, default=80)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    part, size, buf = 0, 0, []
    for t in texts(int(args.mb * 1e6)):
        paras = [re.sub(r"[ \t]+", " ", x).strip() for x in re.split(r"\n\s*\n", t)]
        buf.extend(x for x in paras if len(x) >= 40)
        size += len(t)
        if size >= 8e6:
            (out / f"part-{part:03d}.txt").write_text("\n\n".join(buf) + "\n", encoding="utf-8")
            part, size, buf = part + 1, 0, []
    if buf:
        (out / f"part-{part:03d}.txt").write_text("\n\n".join(buf) + "\n", encoding="utf-8")
    total = sum(f.stat().st_size for f in out.glob("part-*.txt"))
    print(f"wrote {total / 1e6:.1f} MB of text in {len(list(out.glob('part-*.txt')))} files to {out}")


if __name__ == "__main__":
    main()
