"""``svformer-deploy sparsity``: firing-rate and sparsity figures of a checkpoint on real videos, without Jupyter."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from svformer_deploy.cli._app import app
from svformer_deploy.cli._options import DEFAULT_PROFILE, note_fewer_videos, profile_option, progress_bar, videos_option


@app.command()
def sparsity(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file (.pt) written by this project.")],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Folder to write the PNG figures and CSV tables to.")],
    data: Annotated[str, typer.Option(metavar="NAME|DIR", help="'moving-digits' (built in) or a UCF101/HMDB51 folder.")] = "moving-digits",
    videos: Annotated[int, videos_option(help="Number of validation videos to analyse.")] = 20,
    clips: Annotated[int, typer.Option(help="Clips per video (views are pooled).")] = 1,
    crops: Annotated[int, typer.Option(help="Spatial crops per clip: 1 or 3.")] = 1,
    profile: Annotated[str, profile_option()] = DEFAULT_PROFILE,
    baseline: Annotated[list[str] | None, typer.Option("--baseline", metavar="NAME", help="ANN baseline for the energy comparison (repeatable; default svformer-ann): {baselines}.")] = None,
    energy: Annotated[bool, typer.Option("--energy/--no-energy", help="Also count ops and energy (SNN vs ANN twin).")] = True,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier sparsity report at --out (nothing else: a folder it did not write is refused).")] = False,
) -> None:
    """Spike sparsity of a checkpoint on real videos: PNG figures and a tidy CSV (layer, timestep, video, rate).

    Figures: firing rate per layer x timestep, its spread across videos, per class, correct vs wrong, Q/K/V
    sparsity, and (with --energy, from the energy counter) the ops/energy share per module, the spike x spike
    products, and SNN vs ANN-baseline energy. The same analysis as notebooks/sparsity_analysis.ipynb.
    """
    from svformer_deploy.api import sparsity as run_sparsity
    from svformer_deploy.energy.report import plural

    result = run_sparsity(checkpoint, out, data=data, videos=videos, clips=clips, crops=crops, energy=energy,
                          profile=profile, baselines=baseline, force=force,
                          progress=progress_bar)
    a = result.analysis
    note_fewer_videos(videos, a.num_videos)
    typer.echo(f"{plural(a.num_videos, 'video')}, accuracy {a.accuracy:.1%}; wrote {len(result.files)} files to {result.out_dir}")
