"""``svformer-deploy train`` and ``svformer-deploy evaluate``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from svformer_deploy._outputs import run_folder_rule
from svformer_deploy.cli._app import app
from svformer_deploy.cli._options import note_fewer_videos, videos_option
from svformer_deploy.training.outputs import EVALUATION, TRAIN_RUN


def _overrides(items: list[str]) -> dict:
    import yaml

    from svformer_deploy.errors import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: use KEY=VALUE, e.g. --set img_size=32")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _nonfinite_note(row: dict) -> str:
    """The epoch line's words on skipped non-finite steps and on a checkpoint not written (DivergenceGuard)."""
    note = f" | skipped {row['nonfinite_steps']} step(s) with a non-finite loss or gradient" \
        if row.get("nonfinite_steps") else ""
    if row.get("checkpoint_saved") is False:
        note += " | not saved: the epoch ended inside a run of non-finite steps"
    return note


@app.command("train")
def train_cmd(
    model: Annotated[str, typer.Option(metavar="NAME", help="Registered model name (see `svformer-deploy models`).")] = "svformer_tiny",
    data: Annotated[str, typer.Option(metavar="NAME|DIR", help="'moving-digits' (built in) or the root of a UCF101/HMDB51 copy.")] = "moving-digits",
    out: Annotated[Path, typer.Option(metavar="DIR", help="Run folder for last.pt, best.pt, metrics.csv/json: " + run_folder_rule(TRAIN_RUN) + "; any other folder (a fine-tuning run, a user's files) is refused, with or without --force.")] = Path("runs/train"),
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training clips (with --resume: the total).")] = 10,
    batch_size: Annotated[int, typer.Option(min=1, help="Clips per step per process.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate (after warm-up).")] = 2e-3,
    min_lr: Annotated[float, typer.Option(help="Final learning rate of the cosine schedule.")] = 1e-5,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay (never on 1-D parameters).")] = 0.05,
    warmup_epochs: Annotated[float, typer.Option(help="Linear warm-up length in epochs.")] = 1.0,
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing of the cross-entropy (reference 0.1).")] = 0.1,
    clip_grad: Annotated[float, typer.Option(help="Gradient-norm clip; 0 = off.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of every random choice; CPU runs repeat exactly.")] = 0,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    device: Annotated[str, typer.Option(metavar="DEVICE", help="auto, cpu, cuda or cuda:N.")] = "auto",
    no_amp: Annotated[bool, typer.Option("--no-amp", help="Disable mixed precision on CUDA.")] = False,
    train_clips: Annotated[Optional[int], typer.Option(help="Moving digits: clips per epoch (default 6000).")] = None,
    val_videos: Annotated[Optional[int], typer.Option(help="Validate on the first N videos only.")] = None,
    mixup: Annotated[float, typer.Option(help="Mixup alpha (reference 0.8); 0 = off.")] = 0.0,
    cutmix: Annotated[float, typer.Option(help="CutMix alpha (reference 1.0); 0 = off.")] = 0.0,
    rand_augment: Annotated[Optional[str], typer.Option(metavar="N,M", help="RandAugment 'N,M' for videos, e.g. 2,5.")] = None,
    erase_prob: Annotated[float, typer.Option(help="Random-erasing probability for videos (reference 0.25).")] = 0.0,
    sampling_rate: Annotated[int, typer.Option(help="Videos: source frames between clip frames.")] = 4,
    split: Annotated[int, typer.Option(help="Videos: official split 1, 2 or 3.")] = 1,
    precise_bn_batches: Annotated[int, typer.Option(help="Recompute BN statistics on N training batches each epoch (precise BN); 0 = off.")] = 20,
    dist_timeout: Annotated[float, typer.Option(help="torchrun: seconds a collective may wait (rank 0's validation "
                                                "included) before the run fails with a clear error.")] = 1800.0,
    max_bad_steps: Annotated[int, typer.Option(min=1, metavar="N", help="Stop the run after N consecutive steps with a non-finite loss or gradient (each such step is skipped and counted; with AMP, a step the loss scaler skips).")] = 20,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="Model config override KEY=VALUE (repeatable), e.g. img_size=32.")] = None,
    resume: Annotated[Optional[Path], typer.Option(metavar="FILE", help="Continue exactly from a run's last.pt.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Start over when --out holds an earlier training run: its last.pt, best.pt and metrics are replaced; nothing else in --out is touched.")] = False,
) -> None:
    """Train a model (AdamW, warm-up + cosine, label smoothing; DDP under torchrun). Writes checkpoints and metrics."""
    from rich.console import Console

    from svformer_deploy.api import train
    from svformer_deploy.training import TrainConfig

    ra = tuple(int(v) for v in rand_augment.split(",")) if rand_augment else None
    cfg = TrainConfig(model=model, data=data, out_dir=str(out), epochs=epochs, batch_size=batch_size, lr=lr,
                      min_lr=min_lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
                      label_smoothing=label_smoothing, clip_grad=clip_grad or None, seed=seed, workers=workers,
                      device=device, amp=not no_amp, train_clips=train_clips, val_videos=val_videos, mixup=mixup,
                      cutmix=cutmix, rand_augment=ra, erase_prob=erase_prob, sampling_rate=sampling_rate,
                      split_no=split, precise_bn_batches=precise_bn_batches, dist_timeout=dist_timeout,
                      max_bad_steps=max_bad_steps,
                      model_overrides=_overrides(set_ or []))
    console = Console(soft_wrap=True)  # log lines whole: a number is never split
    # the exact command line, stored in the checkpoints (None when called in-process, e.g. from tests)
    command = "svformer-deploy " + shlex.join(sys.argv[1:]) if "train" in sys.argv[1:] else None
    result = train(cfg, resume=resume, force=force, command=command,
                   on_epoch=lambda r: console.print(
                       f"epoch {r['epoch']}: train loss {r['train_loss']:.3f} top-1 {r['train_top1']:.3f} | val top-1 "
                       f"{r['val_top1']:.4f} top-5 {r['val_top5']:.4f} | {r['clips_per_second']} clips/s"
                       + (f" | skipped {r['skipped_videos']} unreadable video(s)" if r["skipped_videos"] else "")
                       + (f" | {r['dropped_clips']} readable clip(s) not trained on (no batch of 2)"
                          if r["dropped_clips"] else "")
                       + (f" | validation skipped {r['val_skipped_videos']} unreadable video(s)"
                          if r.get("val_skipped_videos") else "")
                       + _nonfinite_note(r)))
    if result.history:
        console.print(f"last checkpoint: {result.last}\nbest checkpoint: {result.best}\n"
                      f"metrics: {result.out_dir / 'metrics.csv'}, {result.out_dir / 'metrics.json'}")


@app.command("evaluate")
def evaluate_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint file (e.g. runs/train/best.pt).")],
    data: Annotated[Optional[str], typer.Option(metavar="NAME|DIR", help="'moving-digits' or a UCF101/HMDB51 root; default: the data the checkpoint was trained on.")] = None,
    clips: Annotated[int, typer.Option(min=1, help="Clips per video, spread uniformly over it (reference: 5).")] = 1,
    crops: Annotated[int, typer.Option(min=1, max=3, help="Spatial crops per clip: 1 (centre) or 3 (reference).")] = 1,
    split: Annotated[str, typer.Option(metavar="val|test|train", help="val (= test list for UCF101/HMDB51), test or train.")] = "val",
    num_videos: Annotated[Optional[int], videos_option(help="Evaluate only the first N videos.")] = None,
    out: Annotated[Path, typer.Option(metavar="DIR", help="Folder for eval.json, confusion.png, predictions.csv: " + run_folder_rule(EVALUATION) + "; any other folder (a user's files, a report or bundle) is refused, with or without --force.")] = Path("runs/eval"),
    device: Annotated[str, typer.Option(metavar="DEVICE", help="cpu or cuda.")] = "cpu",
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier evaluation's eval.json, confusion.png and predictions.csv in --out; nothing else in --out is touched.")] = False,
) -> None:
    """Top-1/top-5 and per-class accuracy with softmax scores summed over clips x crops views; confusion-matrix PNG."""
    from rich.console import Console

    from svformer_deploy.api import evaluate

    result = evaluate(checkpoint, data, out=out, split=split, clips=clips, crops=crops, num_videos=num_videos,
                      device=device, force=force)
    report = result.report
    note_fewer_videos(num_videos, report["num_videos"], split)
    console = Console(soft_wrap=True)  # log lines whole: a number is never split
    console.print(f"{report['model_name']} on {report['data']} ({report['split']}, {report['num_videos']} videos, "
                  f"{clips} clip(s) x {crops} crop(s) = {clips * crops} views, softmax summed): "
                  f"top-1 {report['top1']:.2%}  top-5 {report['top5']:.2%}")
    for name, path in result.paths.items():
        console.print(f"  {name}: {path}")
