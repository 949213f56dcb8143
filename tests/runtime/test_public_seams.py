"""Issue 15, item 5: modules of runtime/ share code through public, documented names, never another module's
private ones (`runtime/multi.py` used `pipeline._chain`, `_flush`, `_manifest`)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import vidpipe
from vidpipe.runtime import pipeline

RUNTIME = Path(vidpipe.__file__).parent / "runtime"


@pytest.mark.parametrize("path", sorted(RUNTIME.glob("*.py")), ids=lambda p: p.name)
def test_runtime_modules_import_no_private_name_of_a_sibling(path: Path) -> None:
    tree = ast.parse(path.read_text())
    private = [
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names
        if alias.name.startswith("_")
    ]
    assert private == []


@pytest.mark.parametrize("name", ["run_chain", "flush_chain", "build_manifest"])
def test_the_shared_steps_are_public_and_documented(name: str) -> None:
    assert inspect.getdoc(getattr(pipeline, name))


def test_production_code_holds_no_test_hook() -> None:
    """The crash tests' pause points live in tests/jobs/pause_entry.py, installed by the tests themselves."""
    src = Path(vidpipe.__file__).parent
    hits = [
        f"{path.relative_to(src)}:{i}"
        for path in sorted(src.rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if any(hook in line for hook in ("VIDPIPE_TEST_", "PausePoints", "_PauseStage"))
    ]
    assert hits == []


#: the most lines a module of these layers may have (issue 15, item 5): past it, a module holds several jobs
MAX_MODULE_LINES = 600


@pytest.mark.parametrize("folder", ["runtime", "schedule", "jobs"])
def test_no_module_over_600_lines(folder: str) -> None:
    src = Path(vidpipe.__file__).parent / folder
    long = {p.name: n for p in sorted(src.glob("*.py")) if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}
