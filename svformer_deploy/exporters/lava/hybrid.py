"""The quantised model: the float SVFormer with every Lava partition's neurons replaced by the fixed-point
emulation (host operations stay in float). Used for the accuracy cost of the Lava export.

Forward hooks do the replacement in execution order: a hook on each partition's source neuron keeps its
(possibly already replaced) spikes, and a hook on each partition neuron returns the emulated spikes computed
from the previous layer's spikes instead of the float PLIF's output.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import Tensor, nn

from svformer_deploy.exporters.lava.emulate import emulate_layer
from svformer_deploy.exporters.lava.partition import Partition
from svformer_deploy.models.recording import forward_hooks

__all__ = ["quantized_partitions_active"]


@contextmanager
def quantized_partitions_active(model: nn.Module, partitions: Sequence[Partition]) -> Iterator[None]:
    """Inside the block, ``model(x)`` runs its Lava partitions in the bit-exact fixed-point emulation."""
    mods = dict(model.named_modules())
    seen: dict[str, Tensor] = {}  # neuron name -> its output in this forward (after replacement)

    def keep(name: str):
        def hook(_m, _inp, out: Tensor) -> None:
            seen[name] = out
        return hook

    def replace(part: Partition, idx: int):
        tap, layer = part.taps[idx], part.layers[idx]
        prev = part.source if idx == 0 else part.taps[idx - 1]

        def hook(_m, _inp, out: Tensor) -> Tensor:
            spikes = prev.to_chw(seen[prev.neuron])
            new = tap.insert(out, emulate_layer(layer, spikes))
            seen[tap.neuron] = new
            return new
        return hook

    watched = {p.source.neuron for p in partitions} | {t.neuron for p in partitions for t in p.taps}
    hooks = [(mods[name], keep(name)) for name in watched]  # first: runs before any replacement on that module
    hooks += [(mods[part.taps[i].neuron], replace(part, i)) for part in partitions for i in range(len(part.layers))]
    try:
        with forward_hooks(hooks):
            yield
    finally:
        seen.clear()
