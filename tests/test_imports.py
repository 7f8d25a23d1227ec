"""The package's import graph has no cycle (function-level imports included)."""

from __future__ import annotations

from pathlib import Path

from imagekit.devtools.imports import edges, find_cycle

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_graph_has_no_cycle():
    graph = edges(ROOT)
    assert graph.get("imagekit.launch.launcher")
    assert find_cycle(graph) is None


def test_a_cycle_is_found_and_named():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
