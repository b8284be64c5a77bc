"""``svformer-deploy finetune``: per-timestep BN -> shared BN by distillation, and spike-budget fine-tuning."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from svformer_deploy._outputs import run_folder_rule
from svformer_deploy.cli._app import app
from svformer_deploy.cli._options import DEFAULT_PROFILE, profile_option, videos_option
from svformer_deploy.cli.train import _nonfinite_note
from svformer_deploy.training.outputs import FINETUNE_RUN


@app.command("finetune")
def finetune_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint to convert or fine-tune (the distillation teacher).")],
    bn: Annotated[str, typer.Option(metavar="shared|keep", help="'shared': convert per-timestep BN to shared BN (time-averaged start); "
                                         "'keep': keep the checkpoint's BN (spike-budget runs).")] = "shared",
    data: Annotated[str, typer.Option(metavar="NAME|DIR", help="'moving-digits' or a UCF101/HMDB51 root (training and report).")] = "moving-digits",
    out: Annotated[Path, typer.Option(metavar="DIR", help="Run folder for finetuned.pt, last.pt, metrics, finetune.json: " + run_folder_rule(FINETUNE_RUN) + "; any other folder (a training run, a user's files) is refused, with or without --force.")] = Path("runs/finetune"),
    epochs: Annotated[int, typer.Option(min=1)] = 3,
    batch_size: Annotated[int, typer.Option(min=1, help="Clips per step per process.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate (cosine to --min-lr).")] = 1e-3,
    min_lr: Annotated[float, typer.Option()] = 1e-5,
    train_clips: Annotated[Optional[int], typer.Option(help="Moving digits: clips per epoch.")] = 3000,
    kd_temperature: Annotated[float, typer.Option(help="Distillation temperature tau.")] = 2.0,
    kd_alpha: Annotated[float, typer.Option(help="Weight of the distillation term (1 - alpha: label loss).")] = 0.5,
    rate_weight: Annotated[float, typer.Option(help="Weight of per-layer firing-rate distillation; 0 = off.")] = 0.0,
    spike_budget: Annotated[Optional[list[float]], typer.Option(
        "--spike-budget", help="Fraction of neuron-steps allowed to spike (repeatable: one run per budget, then "
        "the accuracy-vs-energy curve).")] = None,
    budget_weight: Annotated[float, typer.Option(help="Weight of the spike-budget penalty.")] = 1.0,
    eval_videos: Annotated[Optional[int], videos_option(help="Report on the first N validation videos (default all).")] = None,
    clips: Annotated[int, typer.Option(min=1, help="Report: clips per video.")] = 1,
    crops: Annotated[int, typer.Option(min=1, max=3, help="Report: crops per clip (1 or 3).")] = 1,
    energy: Annotated[bool, typer.Option("--energy", help="Report energy per video too (always with budgets).")] = False,
    profile: Annotated[str, profile_option()] = DEFAULT_PROFILE,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(metavar="DEVICE", help="auto, cpu, cuda or cuda:N.")] = "auto",
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    max_bad_steps: Annotated[int, typer.Option(min=1, metavar="N", help="Stop the run after N consecutive steps with a non-finite loss or gradient (each such step is skipped and counted; with AMP, a step the loss scaler skips).")] = 20,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --out from its last.pt (with --spike-budget: reuse finished budgets, continue the rest); an --out holding no such run is an error.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Start over when --out holds an earlier fine-tuning run: its files are replaced; nothing else in --out is touched.")] = False,
) -> None:
    """Distil a checkpoint into an exportable student: shared BN (starting from the time-averaged map that
    --approximate-bn folds) and/or a spike budget. Reports top-1 of the original, the naive fold and the result."""
    from rich.console import Console

    from svformer_deploy import api
    from svformer_deploy.training.finetune import FinetuneConfig, format_report

    cfg = FinetuneConfig(data=data, out_dir=str(out), bn=bn, epochs=epochs, batch_size=batch_size, lr=lr,
                         min_lr=min_lr, seed=seed, workers=workers, device=device, train_clips=train_clips,
                         kd_temperature=kd_temperature, kd_alpha=kd_alpha, rate_weight=rate_weight,
                         budget_weight=budget_weight, eval_videos=eval_videos, eval_clips=clips, eval_crops=crops,
                         energy=energy, energy_profile=profile, max_bad_steps=max_bad_steps)
    console = Console(soft_wrap=True)  # log lines whole: a number is never split
    command = "svformer-deploy " + shlex.join(sys.argv[1:]) if "finetune" in sys.argv[1:] else None

    def on_epoch(r: dict) -> None:
        console.print(f"epoch {r['epoch']}: loss {r['train_loss']:.3f} (kd {r['train_kd']:.3f}) firing rate "
                      f"{r['train_firing_rate']:.4f} | val top-1 {r['val_top1']:.4f}" + _nonfinite_note(r))

    results, curve = api.finetune(checkpoint, cfg, budgets=spike_budget or (), resume=resume, force=force,
                                  command=command, on_epoch=on_epoch)
    for res in results:
        if res.report:
            console.print(format_report(res.report))
    if curve is not None:
        console.print(f"accuracy-vs-energy curve: {curve}, {curve.with_suffix('.png')}")
    elif results[0].report:
        console.print(f"fine-tuned checkpoint: {results[0].checkpoint}\nreport: {results[0].out_dir / 'finetune.json'}")
