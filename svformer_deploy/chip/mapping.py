"""A network mapped onto a chip: derived layers, fixed-point weights, constraint check, blocks, placement.

:func:`build_mapping` runs the steps in this order, and stops at the first that fails:

1. derive the chip network from the plan (:mod:`~svformer_deploy.chip.network`) and quantise every layer in the
   chip's number format (:mod:`~svformer_deploy.chip.quantize`);
2. the constraint check (:mod:`~svformer_deploy.chip.check`): with ``host_fallback``, a layer whose fan-in alone
   exceeds a core first gives its largest input terms to the host (which computes them from the chip's spikes and
   sends the currents), until it fits; every remaining violation is one line of a :class:`ChipConstraintError`;
3. split every layer into blocks (last layer first, so that each layer knows its consumers' blocks), and the host's
   spike sources into input blocks (SANA-FE's input neurons: they only send);
4. place the blocks on the cores of as many chips as they need (:mod:`~svformer_deploy.chip.place`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from svformer_deploy.chip.arch import ChipSpec
from svformer_deploy.chip.check import ChipConstraintError, Violation, check_layer, single_neuron_demand
from svformer_deploy.chip.edges import INPUT_PREFIX, EdgeTerm, edge_arrays, edge_terms
from svformer_deploy.chip.geometry import TermGeometry, term_geometry
from svformer_deploy.chip.network import ChipLayer, ChipNetwork, HostTerm, LinearOp, derive_network
from svformer_deploy.chip.place import Fabric, Placement, place_blocks
from svformer_deploy.chip.quantize import FixedLayer, quantize_chip_layer
from svformer_deploy.chip.split import Block, DestCounts, LayerDemand, Split, split_layer
from svformer_deploy.exporters.plan import Add, HostOp, Input, Neuron, Plan, Synapse

__all__ = ["INPUT_PREFIX", "HostPart", "Mapping", "build_mapping"]

@dataclass(frozen=True)
class HostPart:
    """What the host computes: host operations, neurons, synapses and the currents it sends, and which chip spikes
    it reads."""

    host_ops: tuple[str, ...]
    host_neurons: tuple[str, ...]
    host_synapses: tuple[str, ...]
    current_terms: tuple[tuple[str, str], ...]   # (chip layer, source) of every host current
    chip_spikes_read: tuple[str, ...]            # chip layers whose spikes the host reads
    moved_terms: tuple[tuple[str, str, str], ...] = ()  # (layer, source, why) moved to the host by host_fallback


@dataclass
class Mapping:
    chip: ChipSpec
    network: ChipNetwork
    fixed: dict[str, FixedLayer]
    geometry: dict[str, list[TermGeometry]]
    splits: dict[str, Split]
    groups: list[str]                   # input groups then chip layers, data-flow order
    group_shapes: dict[str, tuple[int, int, int]]
    blocks: list[Block]
    group_blocks: dict[str, range]
    fabric: Fabric
    placement: Placement
    host: HostPart
    edge_terms: list[EdgeTerm] = field(repr=False)
    edges: tuple[np.ndarray, np.ndarray, np.ndarray] = field(repr=False)
    depth: dict[str, int] = field(default_factory=dict)

    @property
    def cores_used(self) -> int:
        return len(self.blocks)

    def group_of_source(self, source: str) -> str:
        return source if source in self.fixed else INPUT_PREFIX + source


def _geometries(layer: ChipLayer, fixed: FixedLayer) -> list[TermGeometry]:
    return [term_geometry(t.source, t.in_shape, layer.shape, w, t.stride, t.padding)
            for t, w in zip(layer.terms, fixed.weights)]


def _move_to_host(layer: ChipLayer, fixed: FixedLayer, geoms: list[TermGeometry], chip: ChipSpec
                  ) -> tuple[ChipLayer, list[tuple[str, str, str]]]:
    """Move ``layer``'s input terms to the host, largest single-neuron demand first, until one neuron fits."""
    lim = chip.limits
    bits = chip.number_format.bits_per_synapse
    order = sorted(range(len(layer.terms)), key=lambda i: -single_neuron_demand([geoms[i]], bits)[0])
    keep = list(range(len(layer.terms)))
    moved: list[tuple[str, str, str]] = []
    for i in order:
        axons, memory = single_neuron_demand([geoms[j] for j in keep], bits)
        over = [what for what, v, cap in (("input axons", axons, lim.axons_in),
                                            ("synaptic memory", memory, lim.synapse_memory_bits))
                if cap is not None and v > cap]
        if not over:
            break
        keep.remove(i)
        t = layer.terms[i]
        moved.append((layer.name, t.source, f"fan-in over the core's {' and '.join(over)}"))
    host = list(layer.host_terms)
    for name, src, _ in moved:
        t = next(t for t in layer.terms if t.source == src)
        host.append(HostTerm(src, (LinearOp("+".join(t.path), t.weight, t.stride, t.padding),)))
    return replace(layer, terms=tuple(layer.terms[j] for j in keep), host_terms=tuple(host)), moved


def _host_part(network: ChipNetwork, moved: list[tuple[str, str, str]]) -> HostPart:
    plan = network.plan
    chip = {layer.name for layer in network.layers}
    nodes = {n.name: n for n in plan.nodes}
    evaluated: set[str] = set()
    read: set[str] = set()
    todo = [h.source for layer in network.layers for h in layer.host_terms]
    todo += list(network.host_neurons) + [plan.output]
    while todo:
        name = todo.pop()
        if name in chip:
            read.add(name)
            continue
        if name in evaluated:
            continue
        evaluated.add(name)
        todo += list(nodes[name].inputs)
    ops = tuple(n.name for n in plan.nodes if isinstance(n, HostOp) and n.name in evaluated)
    syn = tuple(n.name for n in plan.nodes if isinstance(n, (Synapse, Add)) and n.name in evaluated)
    cur = tuple((layer.name, h.source) for layer in network.layers for h in layer.host_terms)
    return HostPart(ops, tuple(network.host_neurons), syn, cur,
                    tuple(n.name for n in plan.nodes if n.name in read), tuple(moved))


def _depths(network: ChipNetwork) -> dict[str, int]:
    """Chip timesteps from the input frames to each chip layer's spikes in a layer-synchronous pipeline: one per
    synapse hop on the chip, one for each trip through the host (the host answers within one chip timestep)."""
    plan = network.plan
    chip = {layer.name: layer for layer in network.layers}
    depth: dict[str, int] = {}
    for node in plan.nodes:
        if isinstance(node, Input):
            depth[node.name] = 0
        elif node.name in chip:
            layer = chip[node.name]
            ins = [depth[t.source] for t in layer.terms] + [depth[h.source] + 1 for h in layer.host_terms]
            depth[node.name] = 1 + max(ins, default=0)
        else:
            base = max((depth[i] for i in node.inputs), default=0)
            depth[node.name] = base + (1 if isinstance(node, Neuron) else 0)
    return depth


def build_mapping(plan: Plan, on_chip: Iterable[str], chip: ChipSpec, *, host_fallback: bool = False) -> Mapping:
    """Map ``plan`` with the neurons ``on_chip`` onto ``chip`` (see the module docstring)."""
    network = derive_network(plan, on_chip)
    fmt = chip.number_format
    layers = list(network.layers)
    fixed: dict[str, FixedLayer] = {}
    geometry: dict[str, list[TermGeometry]] = {}
    violations: list[Violation] = []
    moved_all: list[tuple[str, str, str]] = []
    for i, layer in enumerate(layers):
        fx = quantize_chip_layer(layer, fmt)
        geoms = _geometries(layer, fx)
        problems = check_layer(layer, fx, geoms, chip)
        fan = [v for v in problems if v.limit.startswith(("fan-in", "synaptic memory of one"))]
        if fan and host_fallback and chip.host_currents:
            layer, moved = _move_to_host(layer, fx, geoms, chip)
            moved_all += moved
            layers[i] = layer
            fx = quantize_chip_layer(layer, fmt)
            geoms = _geometries(layer, fx)
            problems = check_layer(layer, fx, geoms, chip)
        violations += problems
        fixed[layer.name], geometry[layer.name] = fx, geoms
    network = ChipNetwork(network.plan, tuple(layers), network.host_neurons)
    if violations:
        raise ChipConstraintError(_violation_text(chip, violations))
    shapes: dict[str, tuple[int, int, int]] = {layer.name: layer.shape for layer in network.layers}
    inputs = [INPUT_PREFIX + s for s in network.host_spike_sources]
    for s in network.host_spike_sources:
        shapes[INPUT_PREFIX + s] = tuple(plan.node(s).shape)
    consumers: dict[str, list[tuple[TermGeometry, str]]] = {}
    for layer in network.layers:
        for t, g in zip(layer.terms, geometry[layer.name]):
            consumers.setdefault(t.source if t.on_chip else INPUT_PREFIX + t.source, []).append((g, layer.name))
    splits: dict[str, Split] = {}
    order = [layer.name for layer in network.layers]
    for name in [*reversed(order), *inputs]:  # consumers before their sources; input groups feed only layers
        cons = consumers.get(name, [])
        dest = DestCounts.of([(g, splits[c]) for g, c in cons]) if cons else None
        terms = geometry.get(name, [])
        ld = LayerDemand(shapes[name], tuple(terms), fmt.bits_per_synapse, dest)
        split = split_layer(name, ld, chip)
        if split is None:
            one = ld.demand((1, 1, 1))
            lim = chip.limits
            if lim.axons_out is not None and one["axons_out"] > lim.axons_out:
                violations.append(Violation(name, "output axons of one neuron (destination cores)",
                                            str(one["axons_out"]), f"{lim.axons_out} output axons per core",
                                            "its consumers are split over too many cores: narrow them"
                                            + (", or pass --host-fallback" if chip.host_currents else "")))
            else:
                violations.append(Violation(name, "block size", "no block size", "the core's limits together",
                                            "narrow the layer or choose a larger chip"))
            continue
        splits[name] = split
    if violations:
        raise ChipConstraintError(_violation_text(chip, violations))
    groups = inputs + order
    blocks: list[Block] = []
    group_blocks: dict[str, range] = {}
    for g in groups:
        bl = splits[g].block_list(shapes[g])
        group_blocks[g] = range(len(blocks), len(blocks) + len(bl))
        blocks += [replace(b, index=len(blocks) + i) for i, b in enumerate(bl)]
    eterms = edge_terms(network, geometry, splits, shapes, group_blocks)
    edges = edge_arrays(eterms)
    fabric = Fabric.for_cores(chip, len(blocks))
    placement = place_blocks(fabric, [group_blocks[g] for g in groups], edges)
    return Mapping(chip, network, fixed, geometry, splits, groups, shapes, blocks, group_blocks, fabric, placement,
                   _host_part(network, moved_all), eterms, edges, _depths(network))


def _violation_text(chip: ChipSpec, violations: list[Violation]) -> str:
    head = (f"the network does not fit {chip.title or chip.name} ({len(violations)} violation"
            f"{'s' if len(violations) != 1 else ''}; nothing was written):")
    return "\n".join([head] + [v.line() for v in violations])
