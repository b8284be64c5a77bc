"""The analysis package imports in one direction (issue 15: no cycle between analysis/energy and sparsity)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import svformer_deploy.analysis as analysis_pkg

PKG = Path(analysis_pkg.__file__).parent


def _imports(path: Path) -> set[str]:
    """Sibling analysis modules imported by ``path`` anywhere (top level, functions, TYPE_CHECKING blocks)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("svformer_deploy.analysis."):
                out.add(node.module.split(".")[2])
            elif node.module == "svformer_deploy.analysis":
                out.update(a.name for a in node.names if (PKG / f"{a.name}.py").exists())
    return out


def test_analysis_modules_form_no_import_cycle():
    graph = {p.stem: _imports(p) - {p.stem} for p in PKG.glob("*.py") if p.stem != "__init__"}
    assert "sparsity" not in graph["energy"] and "energy" in graph["sparsity"]

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cyclic = sorted(m for m in graph if m in reach(m))
    assert cyclic == [], f"modules on an import cycle: {cyclic}"


def test_each_analysis_module_imports_alone_in_a_fresh_interpreter():
    for mod in ("energy", "sparsity"):  # the two modules that imported each other
        r = subprocess.run([sys.executable, "-c", f"import svformer_deploy.analysis.{mod}"], capture_output=True,
                           text=True, cwd=PKG.parent.parent)
        assert r.returncode == 0, r.stderr
