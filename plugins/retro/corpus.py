"""The small plain-text corpus shipped with the retro plugin (self-written, CC0).

``data/corpus.txt``: 26 short documents, one paragraph each, separated by blank
lines. Several share subjects (a river valley and its town, bees, owls and
falcons, sourdough, lighthouses, saving files safely) so that retrieval across
documents finds real neighbours while same-document exclusion has work to do.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["corpus_path", "load_corpus", "split_documents"]


def corpus_path() -> Path:
    """Path of the shipped corpus (``data/corpus.txt``)."""
    return Path(__file__).resolve().parent / "data" / "corpus.txt"


def split_documents(text: str, how: str = "paragraph") -> list[str]:
    """Cut a text into documents: ``"paragraph"`` (blank-line separated), ``"line"`` or
    ``"file"`` (the whole text). Empty documents are dropped."""
    if how == "paragraph":
        parts = [" ".join(p.split()) for p in text.replace("\r\n", "\n").split("\n\n")]
    elif how == "line":
        parts = [line.strip() for line in text.splitlines()]
    elif how == "file":
        parts = [text.strip()]
    else:
        raise ValueError(f"split must be 'paragraph', 'line' or 'file', got {how!r}")
    return [p for p in parts if p]


def load_corpus() -> list[str]:
    """The shipped corpus as a list of documents (one per paragraph)."""
    return split_documents(corpus_path().read_text(encoding="utf-8"))
