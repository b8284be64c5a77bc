"""``svformer-deploy map`` (and ``chips``): an export bundle onto a neuromorphic chip's cores and chips."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional  # noqa: F401 (Typer reads the string annotations)

import typer

from svformer_deploy.cli._app import app
from svformer_deploy.cli._options import DEFAULT_PROFILE, note_fewer_videos, profile_option, videos_option


def _progress(batches):
    import sys

    if not sys.stderr.isatty():
        return batches
    from rich.console import Console
    from rich.progress import track

    return track(batches, description="running the chip model", console=Console(stderr=True))


_CHIP_HELP = ("A registered chip ({chips}) or the path of a SANA-FE architecture YAML (its optional max_axons_in / "
              "max_axons_out / max_synapse_memory_bits / max_distinct_weights_per_neuron core attributes are "
              "checked).")


@app.command("map")
def map_cmd(
    bundle: Annotated[Path, typer.Argument(help="A NIR or Lava export bundle (written by `export`).")],
    chip: Annotated[str, typer.Option("--chip", metavar="NAME|FILE", help=_CHIP_HELP)] = "loihi",
    out: Annotated[Path | None, typer.Option(
        "--out", metavar="DIR", help="Mapping folder to write (default: beside the bundle, "
        "<bundle>-<chip>-mapping).")] = None,
    num_videos: Annotated[int, videos_option(min=0, help="Validation videos whose real spikes give the time, "
                                                         "energy and power (0: the mapping only).")] = 4,
    data: Annotated[str, typer.Option("--data", metavar="NAME|DIR", help="Validation data: 'moving-digits' "
                                      "(built-in) or a UCF101/HMDB51 folder.")] = "moving-digits",
    fps: Annotated[float, typer.Option("--fps", min=0.001, help="Frame rate of the video for the real-time "
                                       "factor.")] = 25.0,
    host_fallback: Annotated[bool, typer.Option(
        "--host-fallback", help="Let the host compute a layer's largest input terms when their fan-in cannot fit "
        "one core (listed in the mapping), instead of refusing the network.")] = False,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", metavar="FILE", help="Source checkpoint (default: the path the bundle records; its SHA-256 "
        "must match).")] = None,
    profile: Annotated[str, profile_option()] = DEFAULT_PROFILE,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier chip mapping at --out (nothing "
                                        "else).")] = False,
) -> None:
    """Map an export bundle onto a neuromorphic chip: cores and chips per layer, placement on the mesh, and the
    time per timestep, energy and power per video from the model's real spikes.

    The chip's limits are checked before anything else: every violation is one line naming the layer, the limit,
    the value and the fix (exit 2, nothing written). `verify MAPPING --with sanafe` checks the result in the
    SANA-FE simulator. See docs/chip.md.
    """
    from svformer_deploy.api import map_bundle

    result = map_bundle(bundle, chip, out, checkpoint=checkpoint, data=data, videos=num_videos, fps=fps,
                        host_fallback=host_fallback, profile=profile, force=force, wrap_batches=_progress)
    if result.videos is not None:
        note_fewer_videos(num_videos, result.videos)
    s = result.summary
    t = s["totals"]
    typer.echo(f"{s['chip']['title'] or s['chip']['name']}: {t['cores']} cores on {t['chips']} chip(s), "
               f"{t['chip_layers']} chip layers, {t['neurons']:,} neurons, {t['synapses']:,} synapses")
    host = s["host"]
    typer.echo(f"host: {', '.join(host['host_ops']) or 'nothing'}; writes {len(host['currents_written'])} current "
               f"term(s), reads the spikes of {len(host['chip_spikes_read'])} layer(s)")
    p = s["precision"]
    if p["weights"]:
        w = p["layers_most_rounded"][0]
        typer.echo(f"precision: {p['share']:.1%} of {p['weights']:,} non-zero weights round to 0 at "
                   f"{p['weight_bits']} bits (most: {w['layer']} {w['share']:.0%})")
    f = s.get("figures")
    if f and f.get("prediction_agreement_with_the_float_model") is not None:
        typer.echo(f"top-1 on {f['videos']} video(s): chip model {f['accuracy_of_the_chip_model']:.1%}, float model "
                   f"{f['accuracy_of_the_float_model']:.1%}; same prediction on "
                   f"{f['prediction_agreement_with_the_float_model']:.1%}")
    if f and f.get("energy_per_video_mJ"):
        e, tt = f["energy_per_video_mJ"], f["time_per_timestep_us"]
        typer.echo(f"per video ({f['source']}): chip {e['chip']:.4g} mJ, host {e['host']:.4g} mJ "
                   f"({e['host_profile']}), {tt['mean']:.4g} us per timestep, latency {f['latency_per_video_ms']:.4g} ms, "
                   f"{f['average_power_mW']:.4g} mW, real-time factor {f['real_time_factor']:.4g} at {f['fps']:g} fps")
    elif f:
        typer.echo(f["not_printed"])
    typer.echo(f"wrote {result.path}")


@app.command("chips")
def chips_cmd() -> None:
    """List the registered chips: cores, limits checked, and whether their per-event figures are published."""
    from svformer_deploy.chip.arch import list_chips, load_chip

    for name in list_chips():
        c = load_chip(name)
        energy = "per-event figures published" if c.energy_published else "no published per-event figures"
        typer.echo(f"{name:10s} {c.title}: {c.cores} cores ({c.mesh_width}x{c.mesh_height} tiles x "
                   f"{c.cores_per_tile}), {c.limits.neurons} neurons/core; checks {', '.join(c.checked_limits())}; "
                   f"{energy}")
