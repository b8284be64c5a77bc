"""Seeing inside a model: one forward-hook helper, spike recording, and the neuron tensor layouts.

    >>> with record_spikes(model) as rec:
    ...     logits = model(clips)
    >>> rec.spikes["blocks3.0.attn.lif_q"].shape     # (T, B, heads, N, d)

:func:`forward_hooks` is the one way the package attaches forward hooks (spike recording, the tie recorder,
the Lava hybrid model, the layer summary, the energy baselines): hooks live exactly as long as the ``with``
block, also on error. :func:`to_chw` / :func:`from_chw` convert a neuron layer's tensor between the layout the
layer declares (:attr:`SpikingNeuron.layout`) and the (T, B, C, H, W) map layout the exports use.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from svformer_deploy.models.neurons import NeuronLayout, SpikingNeuron

__all__ = ["iter_neurons", "SpikeRecording", "record_spikes", "forward_hooks", "to_chw", "from_chw", "ForwardHook"]

ForwardHook = Callable[[nn.Module, tuple, Any], Any]
"""``hook(module, inputs, output)``; a non-None return value replaces the module's output."""


def iter_neurons(model: nn.Module) -> Iterator[tuple[str, SpikingNeuron]]:
    """(dotted name, module) of every neuron layer, in definition order."""
    for name, module in model.named_modules():
        if isinstance(module, SpikingNeuron):
            yield name, module


@contextmanager
def forward_hooks(hooks: Iterable[tuple[nn.Module, ForwardHook]], *, pre: bool = False) -> Iterator[None]:
    """Register ``hook`` on ``module`` for every pair, in order (hooks on one module run in that order); remove
    every one of them when the block ends, also when it raises. ``pre=True`` registers forward *pre*-hooks,
    ``hook(module, inputs)``, which run before the module (a non-None return value replaces its inputs)."""
    handles = []
    try:
        for module, hook in hooks:
            handles.append(module.register_forward_pre_hook(hook) if pre else module.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def to_chw(x: Tensor, layout: NeuronLayout, shape: tuple[int, int, int]) -> Tensor:
    """A neuron layer's (T, B, ...) tensor in ``layout`` as (T, B, C, H, W) with (C, H, W) = ``shape``.

    ``"tokens"`` (T, B, N, C): token n = y * W + x becomes position (y, x). ``"heads"`` (T, B, heads, N, d):
    channel = head * d + i. ``"chw"``: unchanged (reshaped to ``shape``).
    """
    T, B = x.shape[:2]
    if layout == "tokens":
        return x.transpose(2, 3).reshape(T, B, *shape)
    if layout == "heads":
        return x.transpose(3, 4).reshape(T, B, *shape)
    return x.reshape(T, B, *shape)


def from_chw(chw: Tensor, layout: NeuronLayout, like: Tensor) -> Tensor:
    """Inverse of :func:`to_chw`: (T, B, C, H, W) ``chw`` in ``layout``, shaped like the layer's tensor ``like``."""
    T, B, C = chw.shape[:3]
    if layout == "tokens":
        return chw.reshape(T, B, C, -1).transpose(2, 3).contiguous()
    if layout == "heads":
        heads = like.shape[2]
        return chw.reshape(T, B, heads, C // heads, -1).transpose(3, 4).contiguous()
    return chw.reshape(like.shape).clone()


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

    def make_hook(name: str) -> ForwardHook:
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            out = output.detach()
            rec.spikes[name] = out.cpu() if to_cpu else out
            rec.spikes.move_to_end(name)

        return hook

    with forward_hooks((module, make_hook(name)) for name, module in iter_neurons(model)):
        yield rec
