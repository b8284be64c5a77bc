"""The quantised model: the float SVFormer with every Lava partition's neurons replaced by the fixed-point
emulation (host operations stay in float). Used for the accuracy cost of the Lava export.

The replacement is the shared one of the bundle runner
(:func:`~svformer_deploy.exporters.host_ops.partitions_replacing`, behind the ``svformer_float_host`` host op),
with :func:`emulate_partition` as the partition runtime.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import Tensor, nn

from svformer_deploy.exporters.host_ops import partitions_replacing
from svformer_deploy.exporters.lava.emulate import emulate_partition
from svformer_deploy.exporters.lava.partition import Partition, partition_taps

__all__ = ["quantized_partitions_active", "emulation_runtime"]


def emulation_runtime(partitions: Sequence[Partition]):
    """``run(name, spikes) -> every layer's spikes`` of the bit-exact fixed-point emulation of ``partitions``."""
    by_name = {p.name: p for p in partitions}

    def run(name: str, spikes: Tensor) -> list[Tensor]:
        return emulate_partition(by_name[name].layers, spikes, return_all=True)

    return run


@contextmanager
def quantized_partitions_active(model: nn.Module, partitions: Sequence[Partition]) -> Iterator[None]:
    """Inside the block, ``model(x)`` runs its Lava partitions in the bit-exact fixed-point emulation."""
    with partitions_replacing(model, partition_taps(partitions), emulation_runtime(partitions)):
        yield
