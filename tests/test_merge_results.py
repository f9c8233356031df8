"""benchmarks/merge_results.py: a partial `zoo bench` run replaces its variants' rows only."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "merge_results.py"


def _module():
    spec = importlib.util.spec_from_file_location("merge_results", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(variant, ms, met=True):
    return {"variant": variant, "shape": "s", "dtype": "float32", "pass": "fwd", "zoo_ms": ms, "met": met}


def _doc(variants, rows, load):
    return {"schema": "zoo-bench/1", "created": f"run-{load}", "settings": {"variants": variants, "repeat": 5},
            "machine": {"threads": 1, "load_average": [load, load]},
            "shapes": {f"{v}/s": {"batch": 1} for v in variants}, "results": rows,
            "memory": [{"variant": r["variant"], "zoo_mib": 1.0} for r in rows], "skipped": []}


def test_partial_run_replaces_its_rows_and_records_its_conditions():
    merge = _module().merge
    base = _doc(["a", "b"], [_row("a", 1.0), _row("b", 2.0)], 0.5)
    part = _doc(["b", "c"], [_row("b", 3.0), _row("c", 4.0, met=False)], 2.5)
    out = merge(base, part)
    assert sorted((r["variant"], r["zoo_ms"]) for r in out["results"]) == [("a", 1.0), ("b", 3.0), ("c", 4.0)]
    assert sorted(m["variant"] for m in out["memory"]) == ["a", "b", "c"]
    assert set(out["shapes"]) == {"a/s", "b/s", "c/s"}
    assert out["settings"]["variants"] == ["a", "b", "c"]
    assert out["all_met"] is False
    assert out["merged"] == [{"variants": ["b", "c"], "created": "run-2.5", "settings": part["settings"],
                              "threads": 1, "load_average": [2.5, 2.5]}]
    again = merge(out, part)  # merging the same variants again replaces, never duplicates
    assert len(again["results"]) == 3 and len(again["merged"]) == 1


def test_other_schema_is_refused():
    base = _doc(["a"], [_row("a", 1.0)], 0.5)
    with pytest.raises(ValueError, match="schemas differ"):
        _module().merge(base, {**base, "schema": "zoo-bench/0"})
