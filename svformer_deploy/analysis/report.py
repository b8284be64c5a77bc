"""Write a :class:`~svformer_deploy.analysis.SparsityAnalysis` to a folder: PNG figures and tidy CSV tables.

The folder is built under a temporary name next to ``out`` and renamed onto it at the end, so a failed run
leaves nothing behind and an existing report is only replaced with ``force``.
"""

from __future__ import annotations

import os
from pathlib import Path

from svformer_deploy._atomic import json_text
from svformer_deploy._outputs import Output, write_output_dir
from svformer_deploy.analysis.sparsity import SparsityAnalysis

__all__ = ["write_sparsity_report", "REPORT_FILES", "REPORT_OUTPUT"]

REPORT_FILES = ("firing_rates.csv", "predictions.csv", "summary.json")
"""Tables every report holds, beside one ``<figure>.png`` per entry of :func:`~svformer_deploy.analysis.plots.all_figures`."""
REPORT_OUTPUT = Output("sparsity-report", "a sparsity report (svformer-deploy sparsity)", "sparsity",
                       files=REPORT_FILES)
"""What ``sparsity`` writes: a whole folder (these tables, its figures)."""


def write_sparsity_report(a: SparsityAnalysis, out: str | os.PathLike, *, force: bool = False, dpi: int = 120,
                          ) -> dict[str, Path]:
    """Write the figures and tables of ``a`` to the folder ``out``; returns file name -> final path.

    Files: ``firing_rates.csv`` (``layer, timestep, video, rate``: one row per neuron layer, timestep and video,
    layers in network order, rate = fraction of neurons spiking), ``predictions.csv``, ``summary.json``
    (provenance and accuracy), the energy tables when ``a.energy`` is set, and the PNGs.
    Raises :class:`OutputExistsError` when ``out`` exists and ``force`` is false.
    """
    from svformer_deploy.analysis.plots import all_figures

    def build(tmp: Path) -> None:
        a.tidy_csv().to_csv(tmp / "firing_rates.csv", index=False, float_format="%.8g")
        a.predictions.to_csv(tmp / "predictions.csv", index=False)
        summary = {"accuracy": a.accuracy, "layers": list(a.layers), "class_names": list(a.class_names), **a.meta}
        if a.energy is not None:
            for name, table in a.energy.tables().items():
                table.to_csv(tmp / f"{name}.csv", index=False, float_format="%.8g")
            summary["energy"] = a.energy.summary()
        (tmp / "summary.json").write_text(json_text(summary, sort_keys=True, default=str) + "\n", encoding="utf-8")
        for key, fig in all_figures(a).items():
            fig.savefig(tmp / f"{key}.png", dpi=dpi)

    out = write_output_dir(out, build, REPORT_OUTPUT, force=force)
    return {p.name: p for p in sorted(out.iterdir())}
