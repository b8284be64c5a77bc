"""Spike recording: every neuron layer's output for one forward, under stable dotted layer names.

    >>> with record_spikes(model) as rec:
    ...     logits = model(clips)
    >>> rec.spikes["blocks3.0.attn.lif_q"].shape     # (T, B, heads, N, d)

This is the one sanctioned way for the energy counter, the exporters and the notebook to see inside a model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from torch import Tensor, nn

from svformer_deploy.models.neurons import SpikingNeuron

__all__ = ["iter_neurons", "SpikeRecording", "record_spikes"]


def iter_neurons(model: nn.Module) -> Iterator[tuple[str, SpikingNeuron]]:
    """(dotted name, module) of every neuron layer, in definition order."""
    for name, module in model.named_modules():
        if isinstance(module, SpikingNeuron):
            yield name, module


@dataclass
class SpikeRecording:
    """Output of every neuron layer, keyed by dotted name in execution order; each tensor is (T, B, ...).

    Tensors are detached; with ``to_cpu`` they are moved to the CPU as they are recorded.
    """

    spikes: "OrderedDict[str, Tensor]" = field(default_factory=OrderedDict)

    def firing_rates(self) -> "OrderedDict[str, Tensor]":
        """Per layer, the fraction of neurons firing at each timestep: a (T,) tensor (mean over batch and units)."""
        return OrderedDict((k, v.flatten(2).float().mean(dim=(1, 2))) for k, v in self.spikes.items())


@contextmanager
def record_spikes(model: nn.Module, to_cpu: bool = False) -> Iterator[SpikeRecording]:
    """Record the outputs of every :class:`SpikingNeuron` in ``model`` during the forwards inside the block.

    A layer called twice in the block keeps only its last output. Hooks are removed on exit, also on error.
    """
    rec = SpikeRecording()
    handles = []

    def make_hook(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            out = output.detach()
            rec.spikes[name] = out.cpu() if to_cpu else out
            rec.spikes.move_to_end(name)

        return hook

    try:
        for name, module in iter_neurons(model):
            handles.append(module.register_forward_hook(make_hook(name)))
        yield rec
    finally:
        for h in handles:
            h.remove()
