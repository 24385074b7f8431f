"""Imports run one way: no import cycle between any two modules of the core (imports inside functions count),
the core imports neither the app nor napari nor a Qt binding and does not even name them, and import-linter's
contracts in pyproject.toml hold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import infosam_core

grimp = pytest.importorskip("grimp")

CORE_DIR = Path(infosam_core.__file__).resolve().parent
FORBIDDEN = ("infosam_app", "napari", "qtpy", "PySide6", "PySide2", "PyQt5", "PyQt6", "magicgui")
FORBIDDEN_WORDS = ("infosam_app", "napari", "qtpy", "PySide", "PyQt")


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("infosam_core", include_external_packages=True)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]`` in the directed graph ``edges``, or None (iterative depth-first search)."""
    done: set[str] = set()
    for root in sorted(edges):
        if root in done:
            continue
        path, on_path = [root], {root}
        stack = [iter(sorted(edges[root]))]
        while stack:
            target = next(stack[-1], None)
            if target is None:
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
            elif target in on_path:
                return path[path.index(target) :] + [target]
            elif target not in done:
                path.append(target)
                on_path.add(target)
                stack.append(iter(sorted(edges.get(target, ()))))
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"a"}, "a": {"a"}}) == ["a", "a"]


def test_core_has_no_import_cycle(graph):
    core = {m for m in graph.modules if m.split(".")[0] == "infosam_core"}
    assert len(core) > 50  # the whole core was found (inside-function imports included by grimp)
    edges = {m: {t for t in graph.find_modules_directly_imported_by(m) if t in core} for m in core}
    assert sum(len(targets) for targets in edges.values()) > 100
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_core_imports_no_app_napari_or_qt(graph):
    bad = sorted(
        (module, target)
        for module in graph.modules
        if module.split(".")[0] == "infosam_core"
        for target in graph.find_modules_directly_imported_by(module)
        if target.split(".")[0] in FORBIDDEN
    )
    assert not bad, f"the core imports the app/GUI: {bad}"


def test_core_source_does_not_name_the_app_napari_or_qt():
    files = sorted(CORE_DIR.rglob("*.py"))
    assert len(files) > 50
    hits = [
        f"{path.relative_to(CORE_DIR)}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if any(word.lower() in line.lower() for word in FORBIDDEN_WORDS)
    ]
    assert not hits, "\n".join(hits)


def test_import_contracts_hold():
    script = Path(sys.executable).with_name("lint-imports")
    if not script.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    repo = CORE_DIR.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([str(script), "--no-cache"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "broken" in proc.stdout and " 0 broken" in proc.stdout
