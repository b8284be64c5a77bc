"""NIR backend of the export plan: the plan's partitions as NIR node graphs, its host ops as declared host
operations (:class:`Lowered`, which :mod:`~svformer_deploy.exporters.nir.export` writes as a bundle).

:func:`lower_svformer` lowers the model into a :class:`~svformer_deploy.exporters.plan.Plan`, cuts it with
:data:`NIR_CAPABILITIES` (synapses, neurons and residual joins; no per-timestep weights) and writes each
partition as a per-timestep graph of ``nir.Conv2d`` and ``nir.LIF`` nodes whose residual streams are summed
edges (several edges into one node are summed, ``Output`` nodes included); the plan's host ops (attention
product, concat, temporal head) become :class:`HostOpSpec` steps between partitions. A value read across a
boundary becomes a named signal: an ``Output`` node in its partition, an ``Input`` node where it is read.

Mapping (exact in real arithmetic; float rounding differs only in summation order):

* Synapse (BN folded, token Linear as 1x1, depthwise expanded: see :mod:`~svformer_deploy.exporters.plan`) ->
  ``nir.Conv2d`` with float32 weights (rounded once from the plan's float64); dense, since nir 1.0.8's type
  inference mis-reads ``groups > 1``.
* Neuron (PLIF ``H = V + (X - V)/tau``, spike ``H >= V_th``, hard reset to 0) -> ``nir.LIF`` with
  ``tau = tau_plif * dt``, ``r = 1``, ``v_leak = 0``, ``v_threshold = V_th``, ``v_reset = 0`` (one value per
  neuron): its forward-Euler step with step ``dt`` is exactly the PLIF charge equation. NIR fires on
  ``v > v_threshold`` (strict), PLIF on ``H >= V_th``: they differ only when H equals V_th exactly.
* Add -> the union of its operands' edges (in PyTorch's summation order).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from svformer_deploy.errors import ExportError
from svformer_deploy.exporters.bundle import Approximation, Graph, HostOpSpec, PartitionSpec, Signal
from svformer_deploy.exporters.fold import PerTimestepBNError
from svformer_deploy.exporters.plan import (Add, Capabilities, HostOp, Input, Neuron, Plan, PlanPartition,
                                            Synapse, cut, lower, value_kind)

__all__ = ["DT", "NIR_CAPABILITIES", "NIR_FILE_EXT", "Lowered", "LoweredPartition", "lower_svformer", "lower_plan",
           "nir_graph", "PerTimestepBNError", "nir_approximations"]

DT = 1e-4
"""The timestep dt written into every LIF (``tau_nir = tau_plif * dt``); 1e-4 s is what snntorch's importer
hard-codes, so its discretisation of the exported ODE is the PLIF update."""

NIR_CAPABILITIES = Capabilities("nir", frozenset({"synapse", "neuron", "add"}), residual_joins=True,
                                time_varying_weights=False)
"""What a NIR partition holds: Conv2d and LIF nodes, residual joins as summed edges; weights fixed in time."""

NIR_FILE_EXT = ".nir"
"""A partition's file in the bundle: ``<partition name>.nir``."""


@dataclass
class LoweredPartition:
    """A partition under construction: NIR nodes, edges, its signal bindings and the modules it covers.
    ``nodes`` maps node names to NIR nodes (to None when only the bundle's graph is derived: no weights)."""

    name: str
    nodes: dict = field(default_factory=dict)
    edges: list = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)    # Input node name -> signal
    outputs: dict[str, str] = field(default_factory=dict)   # Output node name -> signal
    modules: list[str] = field(default_factory=list)
    node_modules: dict[str, list[str]] = field(default_factory=dict)

    def spec(self) -> PartitionSpec:
        return PartitionSpec(self.name, self.name + NIR_FILE_EXT, dict(self.inputs), dict(self.outputs),
                             list(self.modules), {k: list(v) for k, v in self.node_modules.items()})

    def graph(self, metadata: dict | None = None):
        import nir

        return nir.NIRGraph(nodes=dict(self.nodes), edges=list(self.edges), metadata=metadata or {})


@dataclass
class Lowered:
    """The model as partitions + host ops, in schedule order."""

    partitions: list[LoweredPartition]
    host_ops: list[HostOpSpec]
    host_params: dict[str, np.ndarray]
    signals: dict[str, Signal]
    schedule: list[dict[str, str]]
    graph_input: str
    graph_output: str
    approximations: list[Approximation]
    plan: Plan

    @property
    def graph(self) -> Graph:
        """The bundle's graph: what the manifest derives from the plan (:func:`nir_graph`)."""
        return Graph(dict(self.signals), [p.spec() for p in self.partitions], list(self.host_ops),
                     list(self.schedule), self.graph_input, self.graph_output)


@dataclass(frozen=True)
class _Val:
    """A value during lowering: the sum of the outputs of ``terms`` (node names) in partition ``part``, or a
    named signal (``signal``) produced by a host op or an Input node."""

    part: int
    terms: tuple[str, ...]
    shape: tuple[int, ...]
    signal: str | None = None


class _Builder:
    """Partitions, host ops and signals in schedule order; NIR nodes only with ``with_nodes`` (else None)."""

    def __init__(self, with_nodes: bool = True) -> None:
        self.with_nodes = with_nodes
        self.parts: list[LoweredPartition] = [LoweredPartition("partition_0")]
        self.host_ops: list[HostOpSpec] = []
        self.host_params: dict[str, np.ndarray] = {}
        self.signals: dict[str, Signal] = {}
        self.schedule: list[dict[str, str]] = [{"partition": "partition_0"}]
        self._imported: dict[tuple[int, str], str] = {}

    @property
    def cur(self) -> int:
        return len(self.parts) - 1

    # --- signals crossing partition / host boundaries
    def signal_of(self, v: _Val, name: str, kind: str, time: str = "per_timestep") -> str:
        """A named signal for value ``v``: its own, or a new ``Output`` node of ``v``'s partition."""
        if v.signal is not None:
            return v.signal
        part = self.parts[v.part]
        out_node = f"output.{name}"
        part.nodes[out_node] = self.make(lambda: _nir().Output(output_type={"output": np.array(v.shape)}))
        part.edges += [(t, out_node) for t in v.terms]
        part.outputs[out_node] = name
        self.signals[name] = Signal(name, tuple(v.shape), kind, time)  # type: ignore[arg-type]
        return name

    def here(self, v: _Val, name: str, kind: str = "analog") -> _Val:
        """``v`` usable in the current partition (imported through an ``Input`` node if it lives elsewhere)."""
        if v.signal is None and v.part == self.cur:
            return v
        sig = self.signal_of(v, name, kind)
        key = (self.cur, sig)
        if key not in self._imported:
            node = f"input.{sig}"
            self.parts[self.cur].nodes[node] = self.make(lambda: _nir().Input(input_type={"input": np.array(v.shape)}))
            self.parts[self.cur].inputs[node] = sig
            self._imported[key] = node
        return _Val(self.cur, (self._imported[key],), v.shape)

    def add(self, a: _Val, b: _Val, name: str, modules: list[str]) -> _Val:
        """Residual add: the union of edge sets (summed by the consumer), in PyTorch's summation order."""
        a, b = self.here(a, f"{name}.lhs"), self.here(b, f"{name}.rhs")
        self.parts[self.cur].modules += modules
        return _Val(self.cur, a.terms + b.terms, a.shape)

    # --- nodes
    def make(self, build):
        """``build()``, the NIR node, when this builder writes nodes; None when it derives the graph only."""
        return build() if self.with_nodes else None

    def node(self, name: str, nir_node, x: _Val, modules: list[str], out_shape: tuple[int, ...]) -> _Val:
        x = self.here(x, f"{name}.in")
        part = self.parts[self.cur]
        if name in part.nodes:
            raise ExportError(f"internal error: duplicate NIR node {name}")
        part.nodes[name] = nir_node
        part.edges += [(t, name) for t in x.terms]
        part.modules += modules
        part.node_modules[name] = list(modules)
        return _Val(self.cur, (name,), out_shape)

    def host(self, spec: HostOpSpec, outputs: list[Signal], params: dict[str, np.ndarray]) -> list[_Val]:
        self.host_ops.append(spec)
        self.schedule.append({"host_op": spec.name})
        self.host_params.update(params)
        for s in outputs:
            self.signals[s.name] = s
        name = f"partition_{len(self.parts)}"
        self.parts.append(LoweredPartition(name))
        self.schedule.append({"partition": name})
        return [_Val(-1, (), s.shape, s.name) for s in outputs]

    def finish(self) -> None:
        keep = [p for p in self.parts if p.nodes]
        names = {p.name for p in keep}
        self.schedule = [s for s in self.schedule if "host_op" in s or s["partition"] in names]
        self.parts = keep


_NIR = None


def _nir():
    global _NIR
    if _NIR is None:
        import nir

        _NIR = nir
    return _NIR


# ---------------------------------------------------------------------------------------------- nodes


def _f32(a: np.ndarray) -> np.ndarray:
    """Round a float64 weight array once to float32 (contiguous)."""
    return np.ascontiguousarray(a, dtype=np.float32)


def _conv_node(node: Synapse, weight: np.ndarray, bias: np.ndarray, in_hw: tuple[int, int]):
    return _nir().Conv2d(input_shape=tuple(int(v) for v in in_hw), weight=_f32(weight),
                         stride=(node.stride, node.stride), padding=(node.padding, node.padding), dilation=(1, 1),
                         groups=1, bias=_f32(bias))


def _lif_node(tau_plif: float, v_th: float, shape: tuple[int, ...]):
    """PLIF (tau in timesteps) as ``nir.LIF``: ``tau = tau_plif * dt``, ``r = 1``, ``v_leak = v_reset = 0``."""
    return _nir().LIF(tau=np.full(shape, tau_plif * DT, dtype=np.float64), r=np.ones(shape, dtype=np.float64),
                      v_leak=np.zeros(shape, dtype=np.float64), v_threshold=np.full(shape, v_th, dtype=np.float64),
                      v_reset=np.zeros(shape, dtype=np.float64))


# ---------------------------------------------------------------------------------------------- lowering


def lower_svformer(model: nn.Module, approximate_bn: bool = False) -> Lowered:
    """Lower an eval-mode model into its plan and write the plan's NIR partitions (see the module docstring).
    Raises :class:`PerTimestepBNError` for per-timestep BatchNorm without ``approximate_bn``."""
    return lower_plan(lower(model, approximate_bn=approximate_bn), model.config.to_dict())


def lower_plan(plan: Plan, config: dict) -> Lowered:
    """The NIR partitions and host ops of ``plan`` (with its params), in schedule order."""
    if not plan.params:
        raise ExportError("internal error: the NIR backend needs a plan with its weights (lower(with_params=True))")
    return _lower(plan, config, with_nodes=True)


def nir_graph(plan: Plan, config: dict) -> Graph:
    """The graph of a NIR bundle holding ``plan`` (structure only): the same lowering as :func:`lower_plan`,
    without writing NIR nodes, so the manifest's graph and the partition files cannot disagree."""
    return _lower(plan, config, with_nodes=False).graph


def _lower(plan: Plan, config: dict, with_nodes: bool) -> Lowered:
    nodes = {n.name: n for n in plan.nodes}
    b = _Builder(with_nodes)
    vals: dict[str, _Val] = {}
    exported: dict[str, str] = {}

    def signal(value: str) -> str:
        """``value`` as a named signal (one ``Output`` node, created once)."""
        if value not in exported:
            name = "logits" if value == plan.output else value
            exported[value] = b.signal_of(vals[value], name, value_kind(nodes[value]))
        return exported[value]

    def emit(n) -> None:
        if isinstance(n, Input):
            b.signals[n.name] = Signal(n.name, n.shape, "analog")
            vals[n.name] = _Val(-1, (), n.shape, n.name)
        elif isinstance(n, Neuron):
            lif = b.make(lambda: _lif_node(n.tau, n.v_threshold, n.shape))
            vals[n.name] = b.node(n.name, lif, vals[n.inputs[0]], list(n.modules), n.shape)
        elif isinstance(n, Synapse):
            x = vals[n.inputs[0]]
            conv = b.make(lambda: _conv_node(n, plan.params[f"{n.name}.weight"], plan.params[f"{n.name}.bias"],
                                             x.shape[1:]))
            vals[n.name] = b.node(n.name, conv, x, list(n.modules), n.shape)
            b.parts[b.cur].node_modules[n.name] = [*n.modules, *n.shares]
        elif isinstance(n, Add):
            vals[n.name] = b.add(vals[n.inputs[0]], vals[n.inputs[1]], n.name, list(n.modules))
        else:
            raise ExportError(f"internal error: plan node '{n.name}' ({n.kind}) in a NIR partition")

    graph_input = plan.input
    emit(graph_input)
    for step in cut(plan, NIR_CAPABILITIES):
        if isinstance(step, PlanPartition):
            for name in step.nodes:
                emit(nodes[name])
            continue
        h = nodes[step.node]
        assert isinstance(h, HostOp)
        out = "logits" if h.name == plan.output else h.name
        params = {k: _f32(plan.params[k]) for k in h.params} if with_nodes else {}
        (vals[h.name],) = b.host(
            HostOpSpec(name=h.name, op=h.op, inputs=[signal(i) for i in h.inputs], outputs=[out],
                       modules=list(h.modules), equation=h.equation, attrs=dict(h.attrs), params=list(h.params),
                       time=h.output_time),
            [Signal(out, h.shape, h.output_kind, h.output_time, h.layout)], params)
        exported[h.name] = out
    signal(plan.output)
    b.finish()
    return Lowered(b.parts, b.host_ops, b.host_params, b.signals, b.schedule, graph_input.name, exported[plan.output],
                   nir_approximations(config), plan)


def nir_approximations(config: dict) -> list[Approximation]:
    """What a NIR export departs from the model by: only the time-averaged BatchNorm of a per-timestep-BN model
    (exported with ``approximate_bn``). The verifier re-derives this list from the source checkpoint's config."""
    if config.get("bn") != "per_timestep":
        return []
    T = int(config["num_frames"])
    return [Approximation("bn_time_average", f"per-timestep BatchNorm folded with its time-averaged affine map (mean "
                          f"over T={T} of scale and shift); not exact", {"num_frames": T})]
