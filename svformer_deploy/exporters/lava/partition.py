"""Lava backend of the export plan: the plan cut into netx chains (:data:`LAVA_CAPABILITIES`).

A netx network is a *chain*: spikes in -> (synapse + CUBA neuron) -> ... -> spikes out, one input, no residual
join, no product of two signals, no per-timestep weights. :func:`~svformer_deploy.exporters.plan.cut` finds
every chain of the plan (:func:`~svformer_deploy.exporters.plan.chain_links`): a neuron whose input is a
synapse path reading **one** neuron's spikes. In SVFormer those are the MLPs' ``lif1 -> fc1 (+bn1) -> lif2``,
the attention's ``lif_in -> qkv rows (+bn_qkv) -> lif_q / lif_k / lif_v`` (each PLIF its own tau: netx has one
decay per layer), ``patch_embed{s}.lif -> conv (+bn) -> `` the neurons reading the new stage's stream before any
residual add, and the two-layer local-path chain ``patch_embed3.lif -> conv -> local_path.lif -> dwconv * pwconv
(+bn) -> head.lif`` restricted to its first C4 channels (the concat puts the local path there, and a PLIF is
elementwise). A synapse path of several synapses (depthwise then 1x1) is composed into one dense layer:
``W[o, i] = sum_c P[o, c] D[c, i]``, ``b = P b_D + b_P`` (exact in real arithmetic).

Every other neuron reads a residual stream (a sum of branches), the attention product or analog frames: it runs
on the host, in float, as do the residual adds, the attention product, the concatenation, the temporal Conv3d
head and the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor, nn

from svformer_deploy.errors import UnsupportedLayerError
from svformer_deploy.exporters.fold import compose_then_1x1
from svformer_deploy.exporters.lava.quantize import FloatLayer, LoihiLayer, quantize_layer
from svformer_deploy.exporters.plan import Capabilities, HostOp, Neuron, Plan, PlanPartition, Synapse, cut, lower
from svformer_deploy.models.neurons import NeuronLayout, SpikingNeuron
from svformer_deploy.models.norm import TemporalBatchNorm
from svformer_deploy.models.recording import from_chw, to_chw

__all__ = ["LAVA_CAPABILITIES", "Tap", "Partition", "ChainLayer", "Chain", "plan_chains", "partition_model",
           "partition_plan", "quantize_partition",
           "check_supported", "neuron_assignment", "partition_taps"]

LAVA_CAPABILITIES = Capabilities("lava", frozenset({"synapse", "neuron"}), residual_joins=False,
                                 time_varying_weights=False)
"""What a netx partition holds: chains of synapse + CUBA neuron layers, weights fixed in time."""

Layout = NeuronLayout


@dataclass(frozen=True)
class Tap:
    """Where a partition reads or writes spikes in the model: a neuron layer's output as (T, B, C, H, W).

    ``layout`` is the layout the neuron layer declares (:attr:`SpikingNeuron.layout`, see
    :func:`svformer_deploy.models.recording.to_chw`). ``channels`` = (start, stop)
    when only a channel slice belongs to the partition (``head.lif``).
    """

    neuron: str
    layout: Layout
    shape: tuple[int, int, int]
    channels: tuple[int, int] | None = None

    def to_chw(self, x: Tensor) -> Tensor:
        """The model's output of ``neuron`` -> (T, B, C, H, W) (the slice if ``channels``)."""
        x = to_chw(x, self.layout, (-1, *self.shape[1:]))
        return x if self.channels is None else x[:, :, self.channels[0]:self.channels[1]]

    def insert(self, full: Tensor, chw: Tensor) -> Tensor:
        """Put (T, B, C, H, W) spikes ``chw`` into the model's output ``full`` of ``neuron`` (a new tensor)."""
        chw = chw.to(full.dtype)
        if self.channels is None:
            return from_chw(chw, self.layout, full)
        if self.layout != "chw":
            raise UnsupportedLayerError(f"{self.neuron}: a channel slice of a '{self.layout}' neuron layer")
        out = full.clone()
        out[:, :, self.channels[0]:self.channels[1]] = chw
        return out

    def to_dict(self) -> dict:
        return {"neuron": self.neuron, "layout": self.layout, "shape": list(self.shape),
                "channels": list(self.channels) if self.channels else None}


@dataclass(frozen=True)
class Partition:
    """A netx chain: ``source`` spikes -> layers[0] -> ... -> layers[-1]; ``taps[i]`` is the neuron of layers[i]."""

    name: str
    source: Tap
    layers: tuple  # FloatLayer or LoihiLayer
    taps: tuple[Tap, ...]

    @property
    def output(self) -> Tap:
        return self.taps[-1]

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source.to_dict(), "outputs": [t.to_dict() for t in self.taps],
                "layers": [l.summary() if isinstance(l, LoihiLayer) else {"name": l.name, "neuron": l.neuron,
                                                                          "sources": list(l.sources)}
                           for l in self.layers]}


# ----------------------------------------------------------------------------------------------- checks

def check_supported(model: nn.Module, approximate_bn: bool = False) -> None:
    """Raise :class:`UnsupportedLayerError` naming the first module netx / this exporter cannot express.

    The structural check (exact module type at every position, no ANN twin) is the NIR exporter's; on top of
    it, per-timestep BatchNorm is refused (netx weights are the same at every timestep) unless
    ``approximate_bn``, which folds its time-averaged scale and shift (not exact; verify reports the cost).
    """
    from svformer_deploy.exporters.plan import check_supported as check_structure

    check_structure(model)
    for name, m in model.named_modules():
        if isinstance(m, TemporalBatchNorm) and m.mode != "shared" and not approximate_bn:
            raise UnsupportedLayerError(
                f"{name} (TemporalBatchNorm, mode='per_timestep'): netx weights are the same at every timestep, "
                "so per-timestep BatchNorm cannot be folded into them; export a model trained with bn='shared' (or pass "
                "--approximate-bn to fold its time average, at an accuracy cost that verify reports)")


# ------------------------------------------------------------------------------------------- partitioning

def partition_model(model: nn.Module, approximate_bn: bool = False) -> list[Partition]:
    """The netx chains of a model (see the module docstring), as float layers with BatchNorm folded."""
    check_supported(model, approximate_bn)
    return partition_plan(lower(model, approximate_bn=approximate_bn))


def _compose(plan: Plan, path: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, Synapse]:
    """One dense layer for a synapse path (the first synapse, then 1x1 synapses): float64 weight and bias."""
    first = plan.node(path[0])
    w, b = plan.params[f"{first.name}.weight"], plan.params[f"{first.name}.bias"]
    for name in path[1:]:  # chain_links only continues a path through 1x1, stride-1, unpadded synapses
        w, b = compose_then_1x1(w, b, plan.params[f"{name}.weight"], plan.params[f"{name}.bias"])
    return w, b, first


@dataclass(frozen=True)
class ChainLayer:
    """One layer of a netx chain as the plan gives it: the synapse ``path`` (the first synapse, then 1x1
    synapses) composed into one dense layer, the ``neuron`` it feeds, and the modules the layer is built from."""

    path: tuple[str, ...]
    neuron: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Chain:
    """The structure of a netx chain (no weights): what a Lava bundle's graph is derived from."""

    name: str
    source: Tap
    layers: tuple[ChainLayer, ...]
    taps: tuple[Tap, ...]

    @property
    def output(self) -> Tap:
        return self.taps[-1]


def plan_chains(plan: Plan) -> list[Chain]:
    """The plan cut with :data:`LAVA_CAPABILITIES`, each chain's source, layers and taps (structure only)."""
    nodes = {n.name: n for n in plan.nodes}
    chains = []
    for cp in cut(plan, LAVA_CAPABILITIES):
        assert isinstance(cp, PlanPartition)
        src = nodes[cp.inputs[0]]
        layers, taps, path = [], [], []
        for name in cp.nodes:
            node = nodes[name]
            if not isinstance(node, Neuron):
                path.append(name)
                continue
            channels = None
            if isinstance(nodes[path[-1]], HostOp):  # a concat: this neuron's slice fed by the synapse path
                cat = nodes[path.pop()]
                start = sum(nodes[i].shape[0] for i in cat.inputs[:cat.inputs.index(path[-1])])
                channels = (start, start + nodes[path[-1]].shape[0])
            syn = [nodes[p] for p in path]
            layers.append(ChainLayer(tuple(path), name, tuple(m for s in syn for m in (*s.modules, *s.shares))))
            taps.append(Tap(name, node.layout, tuple(nodes[path[-1]].shape), channels))
            path = []
        chains.append(Chain(cp.name, Tap(src.name, src.layout, tuple(src.shape)), tuple(layers), tuple(taps)))
    return chains


def partition_plan(plan: Plan) -> list[Partition]:
    """The plan's chains (:func:`plan_chains`) as float layers (one per neuron), with the plan's weights."""
    parts = []
    for chain in plan_chains(plan):
        layers = []
        for i, cl in enumerate(chain.layers):
            w, b, first = _compose(plan, cl.path)
            neuron = plan.node(cl.neuron)
            in_shape = chain.taps[i - 1].shape if i else chain.source.shape
            layers.append(FloatLayer(
                name="*".join(cl.path), neuron=cl.neuron, weight=w, bias=b, stride=(first.stride,) * 2,
                padding=(first.padding,) * 2, groups=1, tau=neuron.tau, v_threshold=neuron.v_threshold,
                in_shape=tuple(in_shape), sources=cl.sources))
        parts.append(Partition(chain.name, chain.source, tuple(layers), chain.taps))
    return parts


def quantize_partition(part: Partition, exponent: int | None = None) -> Partition:
    """The same partition with every layer quantised (:func:`quantize_layer`)."""
    return Partition(part.name, part.source, tuple(quantize_layer(l, exponent) for l in part.layers), part.taps)


def partition_taps(parts: list[Partition] | list[Chain]) -> dict[str, dict]:
    """``{name: {"source": tap, "taps": [tap per layer]}}`` (taps as :meth:`Tap.to_dict`): what the host op
    ``svformer_float_host`` needs to call each partition
    (see :func:`~svformer_deploy.exporters.host_ops.partitions_replacing`)."""
    return {p.name: {"source": p.source.to_dict(), "taps": [t.to_dict() for t in p.taps]} for p in parts}


def neuron_assignment(model: nn.Module, parts: list[Partition]) -> dict[str, str]:
    """Every neuron layer -> ``"lava:<partition>"`` or ``"host"`` (``head.lif`` is split: ``"lava:...+host"``)."""
    out: dict[str, str] = {}
    for name, m in model.named_modules():
        if isinstance(m, SpikingNeuron):
            out[name] = "host"
    for p in parts:
        for tap in p.taps:
            out[tap.neuron] = f"lava:{p.name}" + (f"[channels {tap.channels[0]}:{tap.channels[1]}]+host"
                                                  if tap.channels else "")
    return out
