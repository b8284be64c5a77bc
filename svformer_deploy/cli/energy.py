"""``svformer-deploy energy report|price|profiles``: exact op counts and energy of a checkpoint on real videos;
what-if pricing of a registered model from stated firing rates; the hardware profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from svformer_deploy.cli._app import app
from svformer_deploy.cli._options import DEFAULT_PROFILE, App, note_fewer_videos, profile_option, progress_bar, videos_option

energy_app = App(help="Count operations and estimate energy (every report prints the rules it used).",
                         no_args_is_help=True)
app.add_typer(energy_app, name="energy")

# the chip section's options, the same on `energy report` and `energy price`
ChipOption = Annotated[Optional[str], typer.Option(
    "--chip", metavar="NAME|FILE", help="Also give the figures on a neuromorphic chip ({chips}, or "
    "a SANA-FE architecture YAML): cores, chips, time per timestep, energy and power (docs/chip.md).")]
HostFallbackOption = Annotated[bool, typer.Option(
    "--host-fallback", help="With --chip: let the host compute input terms whose fan-in cannot fit one core.")]
FpsOption = Annotated[float, typer.Option("--fps", min=0.001, help="With --chip: the video's frame rate for the "
                                          "real-time factor.")]


@energy_app.command("report")
def report(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file (.pt) written by svformer-deploy.")],
    data: Annotated[str, typer.Option(metavar="NAME|DIR", help="'moving-digits' or a UCF101/HMDB51 folder.")] = "moving-digits",
    videos: Annotated[int, videos_option(help="Number of validation videos.")] = 4,
    clips: Annotated[int, typer.Option(help="Clips per video (views = clips x crops).")] = 1,
    crops: Annotated[int, typer.Option(help="Crops per clip (1 or 3).")] = 1,
    profile: Annotated[str, profile_option()] = DEFAULT_PROFILE,
    baseline: Annotated[Optional[list[str]], typer.Option(metavar="NAME", help="ANN baseline(s): {baselines} (repeatable; default all).")] = None,
    fold_bn: Annotated[bool, typer.Option(help="Count time-invariant BatchNorms as folded into the previous layer (free), in the SNN and every baseline alike.")] = False,
    accuracy: Annotated[Optional[Path], typer.Option(metavar="FILE", help="eval.json that 'svformer-deploy evaluate' wrote for this checkpoint (top1 as a fraction, its views, the checkpoint's SHA-256), set beside the energy.")] = None,
    out: Annotated[Path, typer.Option(metavar="DIR", help="Output directory (must not exist unless --force).")] = Path("energy_report"),
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier energy report at --out (nothing else: a folder it did not write is refused).")] = False,
    chip: ChipOption = None,
    host_fallback: HostFallbackOption = False,
    fps: FpsOption = 25.0,
) -> None:
    """Write per_layer.csv, per_video.csv, summary.json, report.md and plots for CHECKPOINT."""
    from svformer_deploy.api import energy_report
    from svformer_deploy.energy.report import plural, sig_figs

    result = energy_report(checkpoint, data=data, videos=videos, clips=clips, crops=crops, profile=profile,
                           baselines=baseline, fold_bn=fold_bn, accuracy=accuracy, out=out, force=force,
                           progress=progress_bar, chip=chip, host_fallback=host_fallback, fps=fps)
    typer.echo(f"wrote {result.out_dir}")
    s = result.summary
    note_fewer_videos(videos, s["videos"])
    h = s["headline"]["per_video_mj"]
    typer.echo(f"headline ({s['profile']['name']}, {plural(s['videos'], 'video')}, "
               f"{plural(s['views_per_video'], 'view')} each): {sig_figs(h['total_mj'])} mJ per video = compute "
               f"{sig_figs(h['compute_mj'])} + memory {sig_figs(h['memory_mj'])} (weights fetched per event: memory "
               f"{sig_figs(h['memory_fetch_per_event_mj'])}); see report.md")
    fig = (s.get("chip") or {}).get("figures") or {}
    if fig.get("energy_per_video_mJ"):
        e = fig["energy_per_video_mJ"]
        typer.echo(f"on {s['chip']['chip']['name']} ({s['chip']['totals']['cores']:,} cores, "
                   f"{s['chip']['totals']['chips']:,} chip(s)): chip {sig_figs(e['chip'])} + host {sig_figs(e['host'])} "
                   f"mJ per view, {sig_figs(fig['time_per_timestep_us']['mean'])} us per timestep, "
                   f"{sig_figs(fig['average_power_mW'])} mW")
    elif fig:
        typer.echo(fig["not_printed"])


@energy_app.command("profiles")
def profiles(
    names: Annotated[Optional[list[str]], typer.Argument(
        metavar="NAME|FILE", help="Profiles to list (default: every registered one), e.g. 45nm-int3 or a "
        "YAML/JSON file.", show_default=False)] = None,
) -> None:
    """List the hardware energy profiles: every figure each one uses, with its source and how it was derived."""
    from svformer_deploy.energy import get_profile, list_profiles
    from svformer_deploy.energy.profiles import profile_table

    typer.echo(profile_table([get_profile(name) for name in names or list_profiles()]), nl=False)


@energy_app.command("price")
def price(
    model: Annotated[str, typer.Option(metavar="NAME", help="Registered model name (svformer-deploy models), e.g. svformer_ucf101.")],
    rates: Annotated[Path, typer.Option(metavar="FILE", help="CSV with columns name,rate: input firing rate of each synaptic layer "
                                             "with spike input, output rate of each attention lif_q/k/v.")],
    profile: Annotated[str, profile_option()] = DEFAULT_PROFILE,
    views: Annotated[Optional[list[str]], typer.Option(metavar="CLIPSxCROPS", help="Views protocol CLIPSxCROPS (repeatable; default 1x1 and 5x3).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", metavar="FILE", help="Also write the summary as JSON here.")] = None,
    chip: ChipOption = None,
    host_fallback: HostFallbackOption = False,
    fps: FpsOption = 25.0,
) -> None:
    """Price a published model from stated firing rates (no checkpoint, no data) under every convention and the
    memory model; print a markdown report."""
    from svformer_deploy.api import energy_price, parse_views

    result = energy_price(model, rates, profile=profile, views=parse_views(views or ["1x1", "5x3"]),
                          json_out=json_out, chip=chip, host_fallback=host_fallback, fps=fps)
    typer.echo(result.markdown, nl=False)
