"""Every third-party module the package imports is declared in pyproject.toml (issue 22, item 11).

A clean `pip install .` only has what pyproject declares: a module imported while the CLI starts must be in
`dependencies`; one imported lazily (inside a function, or guarded by `except ImportError`) or only by modules the
CLI does not load at start may instead come from an extra. The `test` extra does not count: it is the suite's,
not a user's. Distribution names come from the installed metadata (`cv2` is `opencv-python-headless`).
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
#: the modules a `vidpipe` command loads before it parses its arguments (console script and `python -m vidpipe`)
ENTRY_MODULES = ("vidpipe", "vidpipe.__main__", "vidpipe.cli.app")
#: extras that are not a user's optional feature
NOT_FEATURE_EXTRAS = frozenset({"test"})


@dataclass(frozen=True)
class Import:
    top: str  # top-level module name, e.g. "cv2"
    where: str  # file:line
    eager: bool  # runs when its module is imported (module level, not guarded by `except ImportError`)


@dataclass(frozen=True)
class ModuleImports:
    third_party: list[Import]
    eager_internal: list[str]  # vidpipe modules this module imports at module level


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _guards_import_error(node: ast.Try) -> bool:
    names: list[str] = []
    for h in node.handlers:
        t = h.type
        for e in t.elts if isinstance(t, ast.Tuple) else [t]:
            if isinstance(e, ast.Name):
                names.append(e.id)
    return bool({"ImportError", "ModuleNotFoundError", "Exception"} & set(names))


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def scan(path: Path) -> ModuleImports:
    """Third-party imports of one file, and the vidpipe modules it imports eagerly."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    rel = path.relative_to(ROOT)
    found: list[Import] = []
    internal: list[str] = []

    def visit(node: ast.AST, eager: bool) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            eager = False
        elif isinstance(node, ast.Try) and _guards_import_error(node):
            for child in node.body:
                visit(child, False)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, eager)
            return
        elif isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child, eager)
            return
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
                # `from . import x` may name a submodule: keep both candidates, unknown ones are dropped later
                targets = [mod, *(f"{mod}.{a.name}" for a in node.names)]
            else:
                targets = [node.module or ""]
                if node.module == "vidpipe" or (node.module or "").startswith("vidpipe."):
                    targets += [f"{node.module}.{a.name}" for a in node.names]
        for t in targets:
            top = t.split(".")[0]
            if top == "vidpipe":
                if eager:
                    internal.append(t)
            elif top and top not in sys.stdlib_module_names:
                found.append(Import(top, f"{rel}:{node.lineno}", eager))
        for child in ast.iter_child_nodes(node):
            visit(child, eager)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), True)
    return ModuleImports(found, internal)


def all_modules() -> dict[str, ModuleImports]:
    return {_module_name(p): scan(p) for p in sorted((SRC / "vidpipe").rglob("*.py"))}


def startup_closure(modules: dict[str, ModuleImports]) -> set[str]:
    """The vidpipe modules loaded by starting the CLI: entry modules, their parents, and their eager imports."""
    seen: set[str] = set()
    todo = list(ENTRY_MODULES)
    while todo:
        name = todo.pop()
        if name in seen or name not in modules:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b first
        todo += modules[name].eager_internal
    return seen


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements: list[str]) -> set[str]:
    names = set()
    for req in requirements:
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        assert m, f"unparsable requirement {req!r}"
        names.add(_normalize(m.group(1)))
    return names


def declared() -> tuple[set[str], set[str]]:
    """(dependencies, distributions of the feature extras), normalized names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project.get("optional-dependencies", {})
    feature = [r for name, reqs in extras.items() if name not in NOT_FEATURE_EXTRAS for r in reqs]
    return _requirement_names(project["dependencies"]), _requirement_names(feature)


@functools.cache
def _installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()  # reads every installed distribution's metadata: once


def distributions(top: str) -> set[str]:
    """The installed distributions that provide module `top` (its own name if none is installed here)."""
    dists = _installed().get(top) or [top]
    return {_normalize(d) for d in dists}


def undeclared() -> list[str]:
    modules = all_modules()
    startup = startup_closure(modules)
    deps, extras = declared()
    problems: list[str] = []
    for name, mi in sorted(modules.items()):
        for imp in mi.third_party:
            provided = distributions(imp.top)
            needed_at_start = imp.eager and name in startup
            if provided & deps:
                continue
            if needed_at_start:
                problems.append(f"{imp.where}: {imp.top} (loaded by `vidpipe` at start) is not in dependencies")
            elif not provided & extras:
                problems.append(f"{imp.where}: {imp.top} is in neither dependencies nor a feature extra")
    return problems


def test_startup_closure_reaches_the_commands() -> None:
    # guards the scanner itself: if relative imports stopped resolving, the closure would shrink to the entry
    # modules and nothing could fail
    # modules app.py imports at module level by relative imports (which commands load lazily may change)
    startup = startup_closure(all_modules())
    assert {"vidpipe.cli.job_cmd", "vidpipe.cli.models_cmd", "vidpipe.errors"} <= startup
    assert "vidpipe.stages.cuts.detector" not in startup  # imported inside `vidpipe cuts` only


def test_scanner_sees_eager_lazy_and_guarded_imports(tmp_path: Path) -> None:
    src = SRC / "vidpipe" / "jobs" / "storage.py"
    boto = [i for i in scan(src).third_party if i.top == "boto3"]
    assert boto and not any(i.eager for i in boto)  # imported where a client is made
    fused = [i for i in scan(SRC / "vidpipe" / "models" / "fused.py").third_party if i.top == "triton"]
    assert fused and not any(i.eager for i in fused)  # `try: import triton / except ImportError`
    app = [i for i in scan(SRC / "vidpipe" / "cli" / "app.py").third_party if i.top == "typer"]
    assert any(i.eager for i in app)


def test_every_third_party_import_is_declared() -> None:
    problems = undeclared()
    assert not problems, "undeclared imports (a clean `pip install .` lacks them):\n" + "\n".join(problems)
