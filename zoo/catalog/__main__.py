"""``python -m zoo.catalog NAME... --results FILE... --out DIR``: catalog pages for some
variants, written to a folder, with speed and quality from results files of your own.

For a plugin's author: run ``zoo bench NAME --json bench.json`` and ``zoo compare NAME
--quick --json compare.json`` (anywhere: nothing of the zoo's is written), then
``python -m zoo.catalog NAME --results bench.json compare.json --out site/`` writes
``site/catalog/NAME.md`` (and its picture, and an index) exactly as the zoo's docs show
them. The zoo's docs build reads the same files from ``ZOO_CATALOG_RESULTS`` (paths
separated by ``os.pathsep``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.catalog", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="variants (default: every registered one)")
    parser.add_argument("--results", nargs="+", default=[], metavar="FILE",
                        help="zoo bench / zoo compare JSON files of your own (told apart by their schema)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write the pages into")
    parser.add_argument("--no-harness", action="store_true", help="do not run zoo check for the pages")
    parser.add_argument("--no-pictures", action="store_true", help="do not draw the attention pictures")
    args = parser.parse_args(argv)

    import zoo
    from zoo.catalog import build_catalog
    from zoo.errors import UnknownVariantError

    try:
        specs = [zoo.get_variant(n) for n in args.names] if args.names else None
        files = build_catalog(specs, run_harness=not args.no_harness, pictures=not args.no_pictures,
                              results=args.results)
    except (UnknownVariantError, ValueError) as exc:
        print(f"python -m zoo.catalog: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    for name, content in sorted(files.items()):
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
