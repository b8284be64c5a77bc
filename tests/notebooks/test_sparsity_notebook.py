"""notebooks/sparsity_analysis.ipynb, executed headless by a real Jupyter kernel (ipykernel), through papermill as
docs/sparsity.md tells users to run it."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbformat
import papermill

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "sparsity_analysis.ipynb"
KERNEL = "svformer-deploy-test"


def _kernel_dir(root: Path) -> Path:
    """A kernelspec that starts ipykernel with *this* interpreter and sees this checkout's package."""
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "svformer-deploy test kernel", "language": "python",
        "env": {"PYTHONPATH": pythonpath},
    }))
    return root


def execute_notebook(path: Path, out: Path, monkeypatch, parameters: dict | None = None,
                     timeout: int = 170) -> nbformat.NotebookNode:
    """Execute ``path`` with papermill (``parameters`` injected after the tagged cell) in a fresh kernel; the
    executed copy is written to ``out`` even when a cell raises."""
    monkeypatch.setenv("JUPYTER_PATH", str(_kernel_dir(out.parent / "jupyter")))
    try:
        papermill.execute_notebook(str(path), str(out), parameters=parameters or {}, kernel_name=KERNEL,
                                   cwd=str(out.parent), execution_timeout=timeout, progress_bar=False)
    except papermill.PapermillExecutionError as e:
        raise AssertionError(f"a cell raised {e.ename}: {e.evalue} (executed copy: {out})") from None
    return nbformat.read(out, as_version=4)


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def test_committed_notebook_is_stripped_and_parameterised():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit the notebook with outputs stripped"
    params = [c for c in code if "parameters" in _tags(c)]
    assert len(params) == 1 and code.index(params[0]) == 0
    assert "checkpoint = None" in params[0].source and 'data = "moving-digits"' in params[0].source
    # papermill reads every parameter (a second "=" on a line, e.g. in a comment, hides it from `-p NAME VALUE`)
    assert list(papermill.inspect_notebook(str(NOTEBOOK))) == ["checkpoint", "data", "num_videos", "clips", "crops",
                                                               "profile"]
    # a sentence of explanation above every figure
    for i, c in enumerate(nb.cells):
        if "figure" in _tags(c):
            assert nb.cells[i - 1].cell_type == "markdown" and len(nb.cells[i - 1].source.split()) >= 8


def test_notebook_runs_headless_and_every_figure_cell_draws(tmp_path, monkeypatch):
    out = tmp_path / "sparsity_analysis.executed.ipynb"
    start = time.perf_counter()
    nb = execute_notebook(NOTEBOOK, out, monkeypatch, parameters={"num_videos": 6})
    elapsed = time.perf_counter() - start
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    figures = [c for c in code if "figure" in _tags(c)]
    assert len(figures) == 8
    for c in figures:
        pngs = [o for o in c.outputs if o.output_type in ("display_data", "execute_result") and "image/png" in o.data]
        assert len(pngs) == 1, f"figure cell {c.source!r} produced {len(pngs)} PNG outputs"
        assert len(pngs[0].data["image/png"]) > 5000  # a drawn figure, not an empty canvas
    # the setup cell reports what was analysed
    text = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert "6 videos of 'moving-digits'" in text and "accuracy" in text  # the injected parameter took effect
    assert elapsed < 180, f"notebook took {elapsed:.0f} s; CI budget is 3 minutes"
