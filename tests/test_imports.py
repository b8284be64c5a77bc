"""The package imports in one direction: no import cycle, no import up the layers of docs/architecture.md, no
export target importing another. Every import statement counts, those inside functions included (a lazy import
is a dependency all the same)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import svformer_deploy

PKG = Path(svformer_deploy.__file__).parent
DOC = PKG.parent / "docs" / "architecture.md"
TARGETS = ("svformer_deploy.exporters.nir", "svformer_deploy.exporters.lava", "svformer_deploy.exporters.onnx_export")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from a import b`` counts as ``a.b`` when that is a module)."""
    modules = _modules()

    def known(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {known(a.name) for a in node.names if a.name.startswith("svformer_deploy")}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(
                    "svformer_deploy"):
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else known(node.module)
                          for a in node.names}
        graph[name] = found - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _layers() -> dict[str, int]:
    """Package -> layer, from the table under "## Layers" in docs/architecture.md."""
    section = DOC.read_text(encoding="utf-8").split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|$", section, flags=re.M)
    return {name.strip(): int(layer) for layer, names in rows for name in names.split(",")}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_the_package_has_no_import_cycle():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_runs_up_the_layers_and_every_package_has_a_layer():
    layers = _layers()
    graph = _graph()
    missing = sorted({_package(m) for m in graph} - set(layers))
    assert missing == [], f"packages without a layer in docs/architecture.md: {missing}"
    def wrong(a: str, b: str) -> bool:  # up a layer, or across to a peer package (layer 0 excepted: foundations)
        la, lb = layers[_package(a)], layers[_package(b)]
        return lb > la or (lb == la > 0 and _package(a) != _package(b))

    upward = sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps if wrong(a, b))
    assert upward == [], f"imports that run up (or across) the layers: {upward}"


def test_no_export_target_imports_another():
    def target(module: str) -> str | None:
        return next((t for t in TARGETS if module == t or module.startswith(t + ".")), None)

    crossing = sorted(f"{a} -> {b}" for a, deps in _graph().items() for b in deps
                      if target(a) and target(b) and target(a) != target(b))
    assert crossing == []
