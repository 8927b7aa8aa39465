"""The import graph: no arrow runs upward from the stages into the pipeline, and no kind checks outside models/.

Read from the source (every import, also those inside functions or under TYPE_CHECKING), so it
stays true as the code grows.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

# Above the stages: the composition, the settings, the commands and everything built on them.
UPPER = ("wsi_her2.pipeline", "wsi_her2.settings", "wsi_her2.batch", "wsi_her2.explain", "wsi_her2.viewer",
         "wsi_her2.validation", "wsi_her2.training", "wsi_her2_cli")  # fmt: skip
STAGES = ("models", "outputs", "slide", "tiling", "results.py", "aggregate.py", "tissue.py", "config.py",
          "roi.py", "her2.py", "errors.py", "extras.py", "inference.py", "device.py", "progress.py",
          "streaming.py")  # fmt: skip
# `from wsi_her2.settings import run_score` (the README's example) resolves lazily to the pipeline's.
KNOWN_ALIASES = {("wsi_her2.settings", "wsi_her2.pipeline")}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources(*tops: str) -> dict[str, Path]:
    return {
        _module(p): p for top in tops for p in (ROOT / top).rglob("*.py") if "static" not in p.relative_to(ROOT).parts
    }


MODULES = _sources("wsi_her2", "wsi_her2_cli")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if full in MODULES else node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_stages_import_nothing_above_them() -> None:
    upward = []
    for module, path in MODULES.items():
        relative = path.relative_to(ROOT / "wsi_her2").as_posix() if _is_under(module, "wsi_her2") else ""
        if relative.split("/")[0] not in STAGES:
            continue
        upward += [f"{module} -> {name}" for name in _imports(path) if any(_is_under(name, u) for u in UPPER)]
    assert upward == []


def test_the_library_never_imports_the_command_line_or_its_libraries() -> None:
    found = [
        f"{module} -> {name}"
        for module, path in MODULES.items()
        if _is_under(module, "wsi_her2")
        for name in _imports(path)
        if any(_is_under(name, banned) for banned in ("wsi_her2_cli", "click", "rich"))
    ]
    assert found == []


def test_no_import_cycle_even_through_imports_inside_functions() -> None:
    graph = {m: {n for n in _imports(p) if n in MODULES and n != m} - {b for a, b in KNOWN_ALIASES if a == m}
             for m, p in MODULES.items()}  # fmt: skip
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def _kind_check(node: ast.Compare) -> bool:
    for operand in (node.left, *node.comparators):
        if isinstance(operand, ast.Constant) and operand.value in ("dab", "deep"):
            return True
        if isinstance(operand, ast.Attribute) and operand.attr == "kind":
            return True
        if (
            isinstance(operand, ast.Subscript)
            and isinstance(operand.slice, ast.Constant)
            and operand.slice.value == "kind"
        ):
            return True
        if isinstance(operand, ast.Call) and isinstance(operand.func, ast.Attribute) and operand.func.attr == "get":
            first = operand.args[0] if operand.args else None
            if isinstance(first, ast.Constant) and first.value == "kind":
                return True
    return False


def test_nothing_outside_models_asks_a_scorer_its_kind() -> None:
    found = []
    for module, path in MODULES.items():
        if _is_under(module, "wsi_her2.models"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare) and _kind_check(node):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


def test_the_checks_see_what_they_look_for() -> None:
    """The checks above can fail: they find the imports and comparisons they forbid."""
    assert "wsi_her2.outputs.schema" in _imports(MODULES["wsi_her2.outputs.scoring"])
    assert "wsi_her2.pipeline" in _imports(MODULES["wsi_her2.settings"])  # the alias, inside a function
    tree = ast.parse('if scorer.kind == "dab": pass\nif m.get("kind") != x: pass')
    assert sum(_kind_check(n) for n in ast.walk(tree) if isinstance(n, ast.Compare)) == 2
