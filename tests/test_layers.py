"""Imports only point down: io -> data -> models -> stats -> explain -> run layer -> cli, and no circles."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "alnvid"

LAYERS = {
    "alnvid.errors": 0, "alnvid.utils": 0, "alnvid.config": 0,
    "alnvid.io": 1,
    "alnvid.data": 2,
    "alnvid.models": 3,
    "alnvid.stats": 4,
    "alnvid.explain": 5,
    "alnvid.cli": 7,
    "alnvid.__main__": 8,  # `python -m alnvid`: the command line's entry point
}
RUN_LAYER = 6
"""Every other top-level module (train, cv, compare, report, inference, protocol, callbacks, ...)."""


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def imports() -> dict[str, set[str]]:
    """Every alnvid module and the alnvid modules it imports, at the top or inside functions."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    found = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("alnvid"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("alnvid")]
            else:
                continue
            deps.update(t for t in targets if t in modules and t != name)
        found[name] = deps
    return found


def layer(module: str) -> int:
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return RUN_LAYER if module != "alnvid" else 0


def test_imports_point_down():
    upward = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
              for m, deps in imports().items() for d in deps if layer(d) > layer(m)]
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    graph = imports()
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                circles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(circles)


@pytest.mark.parametrize("module", ["alnvid.explain.core", "alnvid.explain.export"])
def test_explain_does_not_import_the_run_layer(module):
    assert all(layer(d) <= layer(module) for d in imports()[module])
