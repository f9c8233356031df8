"""The RETRO database on disk: a directory written atomically, under a lock, and checked on load.

::

    manifest.json          format, version, sizes, index, embedder and tokenizer
                           settings, the tokens' dtype, the name, size and sha256
                           of each file below, and settings_sha256 over all of it
    tokens-<tag>.npy       tokens (T,) in the narrowest unsigned integer type the
                           tokenizer's vocabulary allows (uint16 for MiniLM's 30,522
                           ids, uint8 for bytes): memory-mapped on load, read as needed
    store-<tag>.npz        doc_offsets (D+1,), chunk_starts (n_chunks,): plain arrays, no pickle
    vectors-<tag>.npy      optional: float16 chunk vectors (n_chunks, dim), memory-mapped, for
                           exact re-scoring of a compressed index's candidates (``rerank``)
    index-<tag>.faiss      the FAISS index; ``load(..., mmap=True)`` maps an IVF index's
                           inverted lists from this file instead of reading them, so a
                           search reads only the lists it probes

Version 2 databases (tokens inside ``store-<tag>.npz``, no ``tokens_dtype``) still
load; :func:`save` always writes version 3.

:func:`save` writes new files under fresh names with :func:`zoo.io.atomic_write`,
then replaces ``manifest.json`` (the commit point) and only then deletes the
previous version's files: a crash at any point leaves the old or the new database
whole. Writers and readers of one directory take a lock (``flock`` on the
directory itself, so no lock file is left behind): concurrent saves run one after
the other, and a load never sees a save half done. A lock held longer than
:data:`LOCK_TIMEOUT_S` raises :class:`DatabaseBusyError`. The lock needs POSIX
``flock`` (Linux, macOS; not every network file system honours it).

:func:`load` checks every manifest field's type before use, every file's presence,
size and sha256, ``settings_sha256`` (so an edited ``embedder.seed`` or
``chunk_size`` is refused, not silently used) and the consistency of shapes, and
raises ``ValueError`` naming the file and the field.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from zoo.io import atomic_write

from attention_zoo_plugins.retro.chunks import ChunkStore
from attention_zoo_plugins.retro.embedders import embedder_config, embedder_from_config
from attention_zoo_plugins.retro.index import _faiss
from attention_zoo_plugins.retro.tokenizer import check_tokenizer_config, tokenizer_from_config

__all__ = ["FORMAT", "VERSION", "MANIFEST", "LOCK_TIMEOUT_S", "DatabaseBusyError", "save", "load"]

FORMAT = "attention-zoo/retro-database"
VERSION = 3
"""Version 2 added ``chunk_starts`` (word-aligned chunks) and ``settings_sha256``; version 3
the memory-mapped ``tokens`` file in its narrowest dtype and compressed (``ivfpq``/factory) indexes."""
OLDEST_VERSION = 2
"""The oldest format :func:`load` still reads."""
TOKEN_DTYPES = ("uint8", "uint16", "uint32", "int64")
MANIFEST = "manifest.json"
LOCK_TIMEOUT_S = 120.0
"""Seconds a save or load waits for another one on the same directory."""

_TAG = r"\d{14}-[0-9a-f]{8}"
_OWN_FILE = re.compile(
    rf"^((store-{_TAG}\.npz|tokens-{_TAG}\.npy|vectors-{_TAG}\.npy|index-{_TAG}\.faiss)"
    rf"|\.(store-{_TAG}\.npz|(tokens|vectors)-{_TAG}\.npy|index-{_TAG}\.faiss|manifest\.json)(\.[A-Za-z0-9_-]+)?\.tmp)$"
)
"""Names :func:`save` writes (and the temporary files of a killed save); only these are deleted."""


class DatabaseBusyError(TimeoutError):
    """Another process held the database directory's lock for longer than the timeout."""


@contextlib.contextmanager
def _locked(root: Path, *, shared: bool, timeout: float | None = None) -> Iterator[None]:
    """Hold ``flock`` on directory ``root``: shared for a load, exclusive for a save.

    Waits up to ``timeout`` (default :data:`LOCK_TIMEOUT_S`) seconds, then raises
    :class:`DatabaseBusyError`. Closing the descriptor releases the lock, also when
    the process dies, so a crash never leaves the database locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows): no serialisation
        yield
        return
    limit = LOCK_TIMEOUT_S if timeout is None else timeout
    fd = os.open(root, os.O_RDONLY)
    try:
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        deadline, delay = time.monotonic() + limit, 0.005
        while True:
            try:
                fcntl.flock(fd, mode)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DatabaseBusyError(
                        f"{root}: another process is {'saving' if shared else 'saving or loading'} this RETRO "
                        f"database and held its lock for more than {limit:g} s; try again when it has finished"
                    ) from None
                time.sleep(delay)
                delay = min(0.1, delay * 2)
        yield
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _settings_sha256(man: dict[str, Any]) -> str:
    """Checksum of every manifest field that decides retrieval (all but ``created``)."""
    decided = {k: v for k, v in man.items() if k not in ("created", "settings_sha256")}
    return hashlib.sha256(json.dumps(decided, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # e.g. Windows cannot open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _commit_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """The commit point of :func:`save` (a seam for crash tests)."""
    with atomic_write(root / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


def token_dtype(tokens: np.ndarray, tokenizer: Any = None) -> str:
    """The narrowest of :data:`TOKEN_DTYPES` that holds every id of the tokenizer's
    vocabulary (``vocab_size``), or of ``tokens`` when there is no tokenizer."""
    vocab = getattr(tokenizer, "vocab_size", None)
    top = int(vocab) - 1 if isinstance(vocab, int) and vocab > 0 else (int(tokens.max()) if tokens.size else 0)
    if tokens.size:
        top = max(top, int(tokens.max()))
    for name in TOKEN_DTYPES:
        if top <= np.iinfo(name).max:
            return name
    raise ValueError(f"token id {top} does not fit in int64")  # pragma: no cover


def save(db: Any, path: str | os.PathLike) -> Path:
    """Write ``db`` (a :class:`~.database.RetroDatabase`) to directory ``path``; see the module doc."""
    faiss = _faiss()
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} exists and is not a directory; a RETRO database is saved as a directory")
    check_replaceable(root)
    root.mkdir(parents=True, exist_ok=True)
    tag = time.strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(4)
    names = {"tokens": f"tokens-{tag}.npy", "store": f"store-{tag}.npz", "index": f"index-{tag}.faiss"}
    dtype = token_dtype(db.tokens, db.tokenizer)
    vectors = getattr(db, "vectors", None)
    if vectors is not None:
        names["vectors"] = f"vectors-{tag}.npy"
    with _locked(root, shared=False):
        files: dict[str, Any] = {}
        try:
            with atomic_write(root / names["tokens"]) as f:
                _write_npy(f, db.tokens, dtype)
            if vectors is not None:
                with atomic_write(root / names["vectors"]) as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(vectors, dtype=np.float16))
            with atomic_write(root / names["store"]) as f:
                np.savez(f, doc_offsets=db.doc_offsets, chunk_starts=db.chunk_starts)
            with atomic_write(root / names["index"]) as f:
                writer = faiss.PyCallbackIOWriter(f.write)
                faiss.write_index(db.index, writer)
                del writer  # flushes
            for key, name in names.items():
                final = root / name
                files[key] = {"name": name, "bytes": final.stat().st_size, "sha256": _sha256(final)}
            tok = db.tokenizer
            manifest = {
                "format": FORMAT, "version": VERSION, "chunk_size": db.chunk_size, "n_chunks": db.n_chunks,
                "n_docs": db.n_docs, "n_tokens": int(db.tokens.size), "tokens_dtype": dtype, "dim": db.dim,
                "index": db.index_info,
                "embedder": db.embedder_cfg,
                "tokenizer": tok.config() if tok is not None and hasattr(tok, "config") else None,
                "files": files, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            manifest["settings_sha256"] = _settings_sha256(manifest)
            _commit_manifest(root, manifest)
        except BaseException:
            for name in names.values():  # unreferenced: remove them, keep the old database
                with contextlib.suppress(OSError):
                    (root / name).unlink()
            raise
        _fsync_dir(root)
        for p in root.iterdir():  # the previous version's files and leftovers of killed saves
            if p.name not in names.values() and _OWN_FILE.match(p.name):
                with contextlib.suppress(OSError):
                    p.unlink()
    return root


def _write_npy(f: Any, tokens: np.ndarray, dtype: str, block: int = 1 << 24) -> None:
    """``tokens`` as an ``.npy`` file of ``dtype``, converted block by block (no full copy)."""
    from numpy.lib import format as npy

    npy.write_array_header_1_0(f, {"descr": npy.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                                   "shape": (int(tokens.size),)})
    for lo in range(0, tokens.size, block):
        f.write(np.ascontiguousarray(tokens[lo : lo + block], dtype=dtype).tobytes())


def load(path: str | os.PathLike, *, embedder: Any = None, verify: bool = True, mmap: bool = False) -> dict[str, Any]:
    """Read and check a directory written by :func:`save` (format version 2 or 3).

    With ``mmap=True`` an IVF index's inverted lists stay on disk, mapped from the
    index file (FAISS ``IO_FLAG_MMAP``): a search reads only the lists it probes, so a
    database larger than RAM can be searched. The tokens are always memory-mapped
    (version 3).

    Returns:
        The keyword arguments of :class:`~.database.RetroDatabase` (``store``,
        ``index``, ``index_info``, ``embedder``, ``embedder_cfg``, ``tokenizer``).

    Raises:
        ValueError: naming the file (and the manifest field), when anything is
            missing, truncated, corrupt, edited or inconsistent.
        DatabaseBusyError: another process held the lock too long.
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"no RETRO database at {root}: "
                         f"{'not a directory' if root.exists() else 'the directory does not exist'}")
    with _locked(root, shared=True):  # held while reading: a save cannot delete files under us
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise ValueError(f"{mpath} is missing: {root} is not a saved RETRO database "
                             f"(build one with RetroDatabase.build(...).save(path) or `zoo retro build`)")
        man = check_manifest(read_manifest(mpath), mpath)
        paths = {}
        for key in ("tokens", "store", "index", "vectors") if man["version"] >= 3 else ("store", "index"):
            if key not in man["files"]:
                continue
            entry = man["files"][key]
            fp = root / entry["name"]
            if not fp.is_file():
                raise ValueError(f"{fp} is missing (the {key} file named by {mpath}); the database is incomplete")
            size = fp.stat().st_size
            if size != entry["bytes"]:
                raise ValueError(f"{fp} is truncated or corrupt: {size:,} bytes, the manifest says {entry['bytes']:,}")
            if verify and _sha256(fp) != entry["sha256"]:
                raise ValueError(f"{fp} is corrupt: its sha256 does not match the manifest {mpath}")
            paths[key] = fp
        store = _read_store(paths["store"], man, paths.get("tokens"))
        index = _read_index(paths["index"], man, mmap=mmap)
        vectors = None
        if "vectors" in paths:
            try:
                vectors = np.load(paths["vectors"], mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise ValueError(f"{paths['vectors']} is not a valid vector array ({exc}); the file is corrupt") from None
            if vectors.shape != (man["n_chunks"], man["dim"]) or vectors.dtype != np.float16:
                raise ValueError(f"{paths['vectors']} holds {vectors.dtype} {vectors.shape}, the manifest says "
                                 f"float16 ({man['n_chunks']}, {man['dim']})")
    ecfg = man["embedder"]
    if embedder is None:
        try:
            embedder = embedder_from_config(ecfg)
        except ValueError:
            embedder = None  # custom: searching by vectors still works
    else:
        given = embedder_config(embedder)
        if given.get("kind") != "custom" and ecfg.get("kind") != "custom" and given != ecfg:
            raise ValueError(f"the embedder {given} differs from the one the database was built with {ecfg}: "
                             f"its vectors would not match the index")
        dim = getattr(embedder, "dim", None)
        if isinstance(dim, int) and dim != man["dim"]:
            raise ValueError(f"the embedder's dim {dim} differs from the index width {man['dim']}")
    return {"store": store, "index": index, "index_info": dict(man["index"]), "embedder": embedder,
            "embedder_cfg": ecfg, "tokenizer": tokenizer_from_config(man["tokenizer"]), "vectors": vectors}


def _read_store(fp: Path, man: dict[str, Any], tokens_fp: Path | None) -> ChunkStore:
    want = {"doc_offsets", "chunk_starts"} | ({"tokens"} if tokens_fp is None else set())
    try:
        with np.load(fp, allow_pickle=False) as z:
            missing = want - set(z.files)
            if missing:
                raise ValueError(f"lacks arrays {sorted(missing)}")
            offsets, starts = z["doc_offsets"], z["chunk_starts"]
            tokens = z["tokens"] if tokens_fp is None else None
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as exc:
        raise ValueError(f"{fp} is not a valid chunk store ({exc}); the file is corrupt") from None
    if tokens_fp is not None:
        try:
            tokens = np.load(tokens_fp, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"{tokens_fp} is not a valid token array ({exc}); the file is corrupt") from None
        if tokens.dtype != np.dtype(man["tokens_dtype"]):
            raise ValueError(f"{tokens_fp} holds {tokens.dtype} tokens, the manifest says {man['tokens_dtype']}")

    def bad(why: str) -> ValueError:
        return ValueError(f"{fp} is inconsistent with its manifest: {why}")

    if tokens.ndim != 1 or offsets.ndim != 1 or starts.ndim != 1 or starts.dtype != np.int64:
        raise bad(f"arrays of the wrong shape or type ({tokens.shape}, {offsets.shape}, {starts.dtype} {starts.shape})")
    if tokens.size != man["n_tokens"] or offsets.size != man["n_docs"] + 1 or starts.size != man["n_chunks"]:
        raise bad(f"{tokens.size} tokens, {offsets.size - 1} documents, {starts.size} chunks; the manifest says "
                  f"{man['n_tokens']}, {man['n_docs']}, {man['n_chunks']}")
    store = ChunkStore(tokens, offsets, man["chunk_size"], starts)
    why = store.problems()
    if why:
        raise bad(why)
    return store


def _read_index(fp: Path, man: dict[str, Any], *, mmap: bool = False) -> Any:
    faiss = _faiss()
    info = man["index"]
    flags = faiss.IO_FLAG_MMAP if mmap and info.get("nlist") else 0
    try:
        index = faiss.read_index(str(fp), flags)
    except Exception as exc:  # faiss raises RuntimeError with a C++ trace
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{fp} is not a readable FAISS index ({first[:200]}); "
                         f"the file is truncated or corrupt: rebuild the database") from None
    if index.d != man["dim"] or index.ntotal != man["n_chunks"]:
        raise ValueError(f"{fp} holds {index.ntotal} vectors of width {index.d}, the manifest says "
                         f"{man['n_chunks']} of width {man['dim']}: the files do not belong together")
    if info.get("nlist") is not None:
        try:
            ivf = faiss.extract_index_ivf(index)
        except Exception:
            raise ValueError(f"{fp} is not an IVF index but the manifest says {info['kind']!r}") from None
        if ivf.nlist != info["nlist"]:
            raise ValueError(f"{fp} has nlist={ivf.nlist}, the manifest says {info['nlist']}")
        ivf.nprobe = info["nprobe"]
    return index


def _is_int(v: Any, lo: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


MAX_MANIFEST_BYTES = 1 << 20
"""A manifest is a few kilobytes; a larger ``manifest.json`` is not one (read no further)."""


def read_manifest(mpath: Path) -> Any:
    """The JSON in ``mpath``, bounded: ``ValueError`` naming the file for one that is too
    large, not JSON, or nested too deeply to parse (never a ``RecursionError``)."""
    size = mpath.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise ValueError(f"{mpath} is {size:,} bytes, not a RETRO manifest (a few kilobytes); rebuild the database")
    try:
        return json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{mpath} is corrupt (not valid JSON: {exc}); rebuild the database") from None
    except RecursionError:
        raise ValueError(f"{mpath} is nested too deeply to be a RETRO manifest; rebuild the database") from None


def check_replaceable(root: Path) -> None:
    """A save replaces only a RETRO database: a ``manifest.json`` of anything else in ``root``
    is someone's data (``ValueError`` naming it)."""
    mpath = Path(root) / MANIFEST
    if not mpath.exists():
        return
    try:
        found = read_manifest(mpath)
    except (ValueError, OSError):
        found = None
    if not (isinstance(found, dict) and found.get("format") == FORMAT):
        raise ValueError(f"{mpath} exists and is not a RETRO database's manifest; refusing to replace it "
                         f"(build into an empty or new directory, or one holding a RETRO database)")


def check_manifest(man: Any, mpath: Path) -> dict[str, Any]:
    """Type-check every field of a manifest before any is used; ``ValueError`` naming
    ``mpath`` and the field otherwise."""
    def bad(field: str, why: str) -> ValueError:
        return ValueError(f"{mpath}: field {field!r} {why} (the manifest is corrupt or was edited; "
                          f"rebuild the database with `zoo retro build`)")

    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise bad("format", f"must be {FORMAT!r}; this is not a RETRO database manifest")
    if not _is_int(man.get("version")):
        raise bad("version", f"must be an integer, got {_short(man.get('version'))}")
    if man["version"] > VERSION:
        raise ValueError(f"{mpath} has format version {man['version']}, newer than this attention-zoo "
                         f"reads ({VERSION}): upgrade attention-zoo")
    if man["version"] < OLDEST_VERSION:
        raise ValueError(f"{mpath} has format version {man['version']}, written by an older attention-zoo "
                         f"(this one reads {OLDEST_VERSION} to {VERSION}): rebuild the database with `zoo retro build`")
    if man["version"] >= 3 and man.get("tokens_dtype") not in TOKEN_DTYPES:
        raise bad("tokens_dtype", f"must be one of {TOKEN_DTYPES}, got {_short(man.get('tokens_dtype'))}")
    for key in ("chunk_size", "n_chunks", "n_docs", "n_tokens", "dim"):
        if not _is_int(man.get(key), 0 if key == "n_tokens" else 1):
            raise bad(key, f"must be a positive integer, got {_short(man.get(key))}")
    info = man.get("index")
    kinds = ("flat", "ivf") if man["version"] < 3 else ("flat", "ivf", "ivfpq", "factory")
    if not isinstance(info, dict) or info.get("kind") not in kinds:
        raise bad("index.kind", f"must be one of {kinds}")
    if info["kind"] in ("ivfpq", "factory") and not isinstance(info.get("factory"), str):
        raise bad("index.factory", f"must be the FAISS factory string of an {info['kind']!r} index")
    if info["kind"] in ("ivf", "ivfpq") or info.get("nlist") is not None:
        for key in ("nlist", "nprobe"):
            if not _is_int(info.get(key), 1):
                raise bad(f"index.{key}", f"must be a positive integer for an IVF index, got {_short(info.get(key))}")
    _check_embedder(man.get("embedder"), bad)
    tok = man.get("tokenizer", "absent")
    try:
        check_tokenizer_config(tok)
    except ValueError as exc:
        raise bad("tokenizer", str(exc)) from None
    files = man.get("files")
    if not isinstance(files, dict):
        raise bad("files", "must be an object")
    required = ("tokens", "store", "index") if man["version"] >= 3 else ("store", "index")
    optional = ("vectors",) if man["version"] >= 3 else ()
    for key in (*required, *(o for o in optional if o in files)):
        e = files.get(key)
        if not (isinstance(e, dict) and isinstance(e.get("name"), str) and _is_int(e.get("bytes"))
                and isinstance(e.get("sha256"), str)):
            raise bad(f"files.{key}", "needs a string 'name', an integer 'bytes' and a string 'sha256'")
        if Path(e["name"]).name != e["name"] or e["name"] in ("", ".", ".."):
            raise bad(f"files.{key}.name", f"must be a plain file name, got {_short(e['name'])}")
    if not isinstance(man.get("settings_sha256"), str):
        raise bad("settings_sha256", "is missing")
    if man["settings_sha256"] != _settings_sha256(man):
        raise ValueError(f"{mpath}: the settings that decide retrieval (chunk_size, index, embedder, tokenizer, "
                         f"files, sizes) do not match their checksum 'settings_sha256': the manifest was edited "
                         f"or damaged; rebuild the database with `zoo retro build`")
    return man


def _check_embedder(cfg: Any, bad: Any) -> None:
    if not isinstance(cfg, dict) or not isinstance(cfg.get("kind"), str):
        raise bad("embedder", "must be an object with a string 'kind'")
    if cfg["kind"] == "hashing":
        if not _is_int(cfg.get("dim"), 1):
            raise bad("embedder.dim", f"must be a positive integer, got {_short(cfg.get('dim'))}")
        ngrams = cfg.get("ngrams")
        if not (isinstance(ngrams, list) and ngrams and all(_is_int(n, 1) for n in ngrams)):
            raise bad("embedder.ngrams", f"must be a list of positive integers, got {_short(ngrams)}")
        if not _is_int(cfg.get("seed"), -(2**63)):
            raise bad("embedder.seed", f"must be an integer, got {_short(cfg.get('seed'))}")
    elif cfg["kind"] == "minilm":
        try:
            embedder_from_config(cfg, load=False)
        except ValueError as exc:
            raise bad("embedder", str(exc)) from None
    elif cfg["kind"] != "custom":
        raise bad("embedder.kind", f"must be 'hashing', 'minilm' or 'custom', got {_short(cfg['kind'])}")
