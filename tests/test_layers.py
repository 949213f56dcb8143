"""The import layers of src/vidpipe (issue 15, item 5): a package imports only packages at or below its own layer,
so media I/O never depends on the runtime that drives it, models never on jobs, and nothing on the CLI. Read from
the source with `ast` (lazy imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vidpipe"

#: lowest first; a module may import its own layer and those before it
LAYERS: list[set[str]] = [
    {"errors", "frames", "paths", "assets", "metrics", "__init__"},
    {"media"},
    {"models"},
    {"stages"},
    {"schedule"},
    {"runtime"},
    {"jobs"},
    {"workers"},  # worker processes per GPU: drive the jobs' segments
    {"eval", "testing", "report"},  # testing: reference helpers for tests and benchmarks; report: compare, run pages
    {"bench"},
    {"cli", "serve", "__main__"},  # serve: queue workers (the RunPod handler), a front end like the CLI
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _package(path: Path) -> str:
    """`media` for src/vidpipe/media/reader.py, `errors` for src/vidpipe/errors.py."""
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported(text: str, rel: Path) -> list[tuple[int, str]]:
    """(line, top-level vidpipe package) of every vidpipe import in `text`, the source of src/vidpipe/`rel`."""
    here = ["vidpipe", *rel.parts[:-1]]  # the package a relative import starts from
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(text, str(rel))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
                # `from .. import jobs` names a package in the imported names
                names = [f"{module}.{a.name}" for a in node.names] if node.module is None else [module]
            else:
                names = [node.module or ""]
        for name in names:
            parts = name.split(".")
            if parts[0] == "vidpipe" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return sorted(found)


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_package_has_a_layer() -> None:
    unknown = {_package(p) for p in _modules()} - set(RANK)
    assert not unknown, f"add these to LAYERS: {sorted(unknown)}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_wrong_way_import(path: Path) -> None:
    own = RANK[_package(path)]
    wrong = [
        f"{path.relative_to(SRC)}:{line} imports vidpipe.{pkg} (layer {RANK[pkg]} above {own})"
        for line, pkg in _imported(path.read_text(), path.relative_to(SRC))
        if pkg in RANK and RANK[pkg] > own
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_wrong_way_imports() -> None:
    """The checker itself: lazy, relative, absolute and package-name imports are all found."""
    code = (
        "from ..frames import FrameBatch\n"
        "def f():\n    from ..runtime.threads import Producer\n"
        "import vidpipe.jobs.spec\n"
        "from .. import cli\n"
        "from .yuv import x\n"
    )
    assert _imported(code, Path("media/reader.py")) == [
        (1, "frames"),
        (3, "runtime"),
        (4, "jobs"),
        (5, "cli"),
        (6, "media"),
    ]
