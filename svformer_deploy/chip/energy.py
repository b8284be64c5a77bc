"""The chip section of ``energy report --chip`` and ``energy price --chip``: the same views (or the same stated
rates) through the model mapped onto a chip, beside the arithmetic energy of the same spikes.

The model is mapped as its NIR export would put it on the chip (every neuron on the chip; attention products,
the temporal head and the input frames' convolution on the host). The comparison row prices the *same counted
operations* with the arithmetic ``loihi`` profile (pJ per synaptic op and per neuron update, no routing, no time):
the difference between the two is what mapping adds -- composed convolutions and residual joins expanded into
every neuron that reads them, messages, hops, per-neuron access every step -- and is the point of the section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from svformer_deploy.chip.arch import load_chip
from svformer_deploy.chip.mapping import Mapping
from svformer_deploy.chip.report import _plots, chip_markdown, figures_summary, mapping_summary
from svformer_deploy.chip.service import chip_figures, float_reference, mapping_from_model, neuron_rates, rate_figures

__all__ = ["ChipSection", "price_section"]

ARITHMETIC_PROFILE = "loihi"


class ChipSection:
    """An energy report's chip section (:class:`svformer_deploy.energy.report.ReportSection`): the views the report
    counts, run through the model mapped onto ``chip``, beside their arithmetic ``loihi`` price."""

    def __init__(self, chip: str, host_fallback: bool = False, fps: float = 25.0) -> None:
        self.chip, self.host_fallback, self.fps = chip, host_fallback, fps
        self.mapping: Mapping | None = None
        self.config: dict[str, Any] = {}
        self.views: list[Tensor] = []
        self.labels: list[int] = []
        self.arithmetic_pj = 0.0
        self.fig: Any = None
        self.reference: Any = None

    def start(self, model: nn.Module) -> None:
        """Map ``model`` now: the chip's constraint check runs before any counting (an error stops the report)."""
        self.mapping = mapping_from_model(model, load_chip(self.chip), host_fallback=self.host_fallback)
        self.config = model.config.to_dict()
        self.reference = float_reference(model)

    def add(self, views: Tensor, label: int, counts: Any) -> None:
        """The views of one video and their operation counts (priced under the arithmetic ``loihi`` profile)."""
        from svformer_deploy.energy import get_profile
        from svformer_deploy.energy.energy import energy_of

        for v in views:
            self.views.append(v)
            self.labels.append(int(label))
        self.arithmetic_pj += energy_of(counts, get_profile(ARITHMETIC_PROFILE)).compute_pj

    def finish(self, profile: str) -> tuple[str, dict[str, Any], str]:
        def batches():
            for i in range(0, len(self.views), 4):
                yield torch.stack(self.views[i:i + 4]), torch.tensor(self.labels[i:i + 4])

        assert self.mapping is not None, "ChipSection.start was not called"
        self.fig = chip_figures(self.mapping, batches(), fps=self.fps, profile=profile, config=self.config,
                                reference=self.reference)
        summary = mapping_summary(self.mapping)
        figs = figures_summary(self.mapping, self.fig)
        n = len(self.views)
        figs["arithmetic_same_spikes_mJ_per_view"] = {"profile": ARITHMETIC_PROFILE,
                                                       "compute": self.arithmetic_pj / n * 1e-9 if n else None}
        md = chip_markdown(self.mapping, summary, figs, heading="##") + _comparison_lines(figs)
        return "chip", {**summary, "figures": figs}, md

    def plots(self, folder: Path) -> list[str]:
        files = _plots(folder, self.mapping, self.fig)
        for f in files:
            (folder / f).rename(folder / f"chip_{f}")
        return [f"chip_{f}" for f in files]


def _comparison_lines(figs: dict[str, Any]) -> str:
    a = figs.get("arithmetic_same_spikes_mJ_per_view", {})
    e = figs.get("energy_per_video_mJ")
    if not e or a.get("compute") is None:
        return ""
    return (f"\nThe same views priced by the arithmetic `{a['profile']}` profile (its pJ per synaptic op and per "
            f"neuron update, host MACs at 45 nm): {a['compute']:.4g} mJ per view; on the mapped chip: "
            f"{e['chip']:.4g} mJ on chip + {e['host']:.4g} mJ on the host. The chip figure counts what the "
            "arithmetic one leaves out: synapses of composed convolutions and of residual joins expanded into "
            "every neuron that reads them, messages and hops, and every neuron's access at every step.\n")


def price_section(model_name: str, layer_rates: dict[str, float], chip: str, host_fallback: bool, fps: float,
                  profile: str = "45nm-fp32") -> tuple[dict[str, Any], str]:
    """Chip figures of a registered model's structure (shared BatchNorm, the chip's requirement) from stated
    rates; the weights are not known, so every tap of every kernel is a synapse."""
    from svformer_deploy.models import create_model

    model = create_model(model_name, bn="shared")
    mapping = mapping_from_model(model, load_chip(chip), host_fallback=host_fallback)
    rates = neuron_rates(mapping.network.plan, layer_rates)
    fig = rate_figures(mapping, rates, model.config.num_frames, fps=fps, profile=profile)
    summary = mapping_summary(mapping)
    figs = figures_summary(mapping, fig)
    md = chip_markdown(mapping, summary, figs, heading="##")
    md += ("\nStructure from the registered config with shared BatchNorm; the weights are not known, so every "
           "kernel tap counts as a synapse and no fixed-point range is checked. Counts are expected values from "
           "the stated rates.\n")
    return {**summary, "figures": figs}, md
