"""The export plan: one typed, versioned, serialisable intermediate between a model and every export target.

Data flow: ``lower(model) -> Plan`` (a table of lowerings keyed by module type) -> ``cut(plan, capabilities)``
(split by what a target can hold) -> a backend writes each partition (NIR graphs, netx chains) and declares the
rest as host operations. The plan owns the invariant every bundle keeps: **every model operation is covered by
exactly one node, and every host operation a node names is registered**; it is checked whenever a plan is built
or read back (a bundle stores its plan in ``manifest.json``).

Nodes (each produces one value, named like the node; shapes exclude batch and time, one frame per timestep):

* :class:`Input` -- the graph input (analog frames).
* :class:`Synapse` -- a dense 2-D convolution with bias, BatchNorm folded in:
  ``y[o] = sum_{i, ky, kx} W[o, i, ky, kx] x[i, s y + ky - p, s x + kx - p] + b[o]``. Token-wise ``nn.Linear``
  is its 1x1 case, depthwise kernels are expanded block-diagonally (see :mod:`~svformer_deploy.exporters.fold`).
  ``time_varying`` weights (per-timestep BatchNorm folded exactly) carry a leading T axis.
* :class:`Neuron` -- PLIF (decay_input, hard reset to 0): ``H[t] = V[t-1] + (X[t] - V[t-1]) / tau``,
  ``S[t] = H[t] >= V_th``, ``V[t] = H[t] (1 - S[t])``; ``V[-1] = 0``.
* :class:`Add` -- a residual join ``y = a + b``.
* :class:`HostOp` -- an operation of the host-op registry (:data:`~svformer_deploy.exporters.host_ops.HOST_OPS`):
  the attention product, the channel concat, the temporal head; its equation travels with it.

Weights live in ``Plan.params`` (float64 arrays keyed ``<node>.weight`` / ``<node>.bias`` or by the host op's
``params``); the JSON form holds the structure only, and a plan read back without arrays is still checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch
from torch import nn

from svformer_deploy.errors import ExportError, UnsupportedLayerError
from svformer_deploy.exporters.fold import (PerTimestepBNError, dense_from_depthwise, fold_bn, fold_bn_per_timestep,
                                            plif_tau, synapse_params)

__all__ = ["PLAN_VERSION", "PlanError", "PlanNode", "Input", "Synapse", "Neuron", "Add", "HostOp", "Plan",
           "NODE_KINDS", "ListOf", "Lowering", "LOWERINGS", "register_lowering", "check_supported", "lower",
           "model_operations", "Capabilities", "PlanPartition", "HostStep", "cut", "chain_links",
           "partition_coverage", "value_kind", "coverage_of", "is_name", "Kind", "Time", "VALUE_KINDS", "TIMES"]

PLAN_VERSION = 1
Kind = Literal["spikes", "analog", "logits"]
"""What a value holds: spikes (0/1), analog values (frames, currents, residual streams) or logits."""
Time = Literal["per_timestep", "per_clip"]
"""When a value exists: once per frame, or once per clip (after the last frame)."""
VALUE_KINDS: tuple[str, ...] = get_args(Kind)
TIMES: tuple[str, ...] = get_args(Time)


class PlanError(ExportError):
    """An export plan that breaks its own rules (a malformed node, a broken data flow, broken coverage)."""


def is_name(x: Any) -> bool:
    """A name in a plan or a bundle manifest: a non-empty string."""
    return isinstance(x, str) and bool(x)


def _check_shape(what: str, shape: Any) -> None:
    if not (isinstance(shape, tuple) and shape and all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                                                       for n in shape)):
        raise PlanError(f"plan node {what}: shape {shape!r} is not a tuple of positive sizes")


# ---------------------------------------------------------------------------------------------- nodes


@dataclass(frozen=True)
class PlanNode:
    """One operation of the plan. ``inputs`` name earlier nodes; ``modules`` are the model operations this node
    covers (each model operation is covered by exactly one node of the plan)."""

    name: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    modules: tuple[str, ...]

    kind: ClassVar[str] = ""
    arity: ClassVar[int | None] = 1
    value_kind: ClassVar[Kind] = "analog"

    def __post_init__(self) -> None:
        if not is_name(self.name):
            raise PlanError(f"a {self.kind} node has no name ({self.name!r})")
        for key in ("inputs", "modules"):
            v = getattr(self, key)
            if not isinstance(v, tuple) or not all(is_name(x) for x in v):
                raise PlanError(f"plan node '{self.name}': {key} must be a tuple of names, got {v!r}")
        if self.arity is not None and len(self.inputs) != self.arity:
            raise PlanError(f"plan node '{self.name}' ({self.kind}) has {len(self.inputs)} inputs, needs {self.arity}")
        _check_shape(f"'{self.name}'", self.shape)
        self.check()

    def check(self) -> None:
        """Kind-specific rules (overridden)."""

    @property
    def time(self) -> Time:
        return "per_timestep"

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Arrays this node needs in ``Plan.params``, with their shapes."""
        return {}

    def check_inputs(self, shapes: list[tuple[int, ...]]) -> None:
        """Rules relating this node to the shapes of its inputs (overridden)."""

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": self.kind}
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d


@dataclass(frozen=True)
class Input(PlanNode):
    """The graph input: analog frames (C, H, W), one per timestep."""

    kind: ClassVar[str] = "input"
    arity: ClassVar[int | None] = 0


@dataclass(frozen=True)
class Synapse(PlanNode):
    """Dense conv ``y[o] = sum_{i,ky,kx} W[o,i,ky,kx] x[i, s y + ky - p, s x + kx - p] + b[o]`` (BN folded).

    ``shares``: modules whose weights this node also uses while another node covers them (the k and v rows of a
    fused qkv Linear). ``time_varying``: weights (T, O, I, k, k) and bias (T, O), one set per timestep."""

    kernel: int = 1
    stride: int = 1
    padding: int = 0
    in_channels: int = 1
    shares: tuple[str, ...] = ()
    time_varying: bool = False
    num_steps: int = 0

    kind: ClassVar[str] = "synapse"

    def check(self) -> None:
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in
                 (self.kernel, self.stride, self.padding, self.in_channels, self.num_steps))
        if not ok or self.kernel < 1 or self.stride < 1 or self.padding < 0 or self.in_channels < 1:
            raise PlanError(f"plan node '{self.name}': kernel/stride/padding/in_channels must be integers "
                            f"(>= 1, >= 1, >= 0, >= 1), got {self.kernel}/{self.stride}/{self.padding}/"
                            f"{self.in_channels}")
        if len(self.shape) != 3:
            raise PlanError(f"plan node '{self.name}': a synapse outputs a (C, H, W) map, not {self.shape}")
        if self.time_varying != (self.num_steps > 0):
            raise PlanError(f"plan node '{self.name}': time_varying weights need num_steps > 0 (and only they)")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        t = (self.num_steps,) if self.time_varying else ()
        return {f"{self.name}.weight": (*t, self.shape[0], self.in_channels, self.kernel, self.kernel),
                f"{self.name}.bias": (*t, self.shape[0])}

    def check_inputs(self, shapes: list[tuple[int, ...]]) -> None:
        (c, h, w), = shapes
        out = (self.shape[0], (h + 2 * self.padding - self.kernel) // self.stride + 1,
               (w + 2 * self.padding - self.kernel) // self.stride + 1)
        if c != self.in_channels or out != self.shape:
            raise PlanError(f"plan node '{self.name}': input ({c}, {h}, {w}) gives {out}, the node declares "
                            f"{self.shape} with {self.in_channels} input channels")


@dataclass(frozen=True)
class Neuron(PlanNode):
    """PLIF: ``H[t] = V[t-1] + (X[t] - V[t-1]) / tau``; ``S[t] = H[t] >= v_threshold``; ``V[t] = H[t] (1 - S[t])``.
    ``tau`` in timesteps (> 1: ``1 / sigmoid(w)``); ``layout`` is the one the model's layer declares."""

    tau: float = 2.0
    v_threshold: float = 1.0
    layout: str = "chw"

    kind: ClassVar[str] = "neuron"
    value_kind: ClassVar[Kind] = "spikes"

    def check(self) -> None:
        if not (isinstance(self.tau, float) and np.isfinite(self.tau) and self.tau >= 1.0):
            raise PlanError(f"plan node '{self.name}': tau {self.tau!r} is not a finite float >= 1 (1 / sigmoid(w))")
        if not (isinstance(self.v_threshold, float) and np.isfinite(self.v_threshold) and self.v_threshold > 0):
            raise PlanError(f"plan node '{self.name}': v_threshold {self.v_threshold!r} is not a positive float")
        if not is_name(self.layout):
            raise PlanError(f"plan node '{self.name}': layout {self.layout!r} is not a name")

    def check_inputs(self, shapes: list[tuple[int, ...]]) -> None:
        if shapes[0] != self.shape:
            raise PlanError(f"plan node '{self.name}': a neuron is elementwise, but its input has shape {shapes[0]} "
                            f"and it declares {self.shape}")


@dataclass(frozen=True)
class Add(PlanNode):
    """Residual join ``y = a + b`` (in this order: PyTorch's summation order)."""

    kind: ClassVar[str] = "add"
    arity: ClassVar[int | None] = 2

    def check_inputs(self, shapes: list[tuple[int, ...]]) -> None:
        if shapes[0] != self.shape or shapes[1] != self.shape:
            raise PlanError(f"plan node '{self.name}': adds {shapes[0]} and {shapes[1]} into {self.shape}")


@dataclass(frozen=True)
class HostOp(PlanNode):
    """An operation of the host-op registry, stated by ``equation``; ``attrs`` are its JSON attributes,
    ``params`` the keys of its arrays; ``output_kind`` / ``output_time`` describe the value it produces."""

    op: str = ""
    equation: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    params: tuple[str, ...] = ()
    output_kind: Kind = "analog"
    output_time: Time = "per_timestep"
    layout: str = "C,H,W"

    kind: ClassVar[str] = "host"
    arity: ClassVar[int | None] = None

    def check(self) -> None:
        from svformer_deploy.exporters.host_ops import registration_problem

        problem = registration_problem(self.op)
        if problem:
            raise PlanError(f"plan node '{self.name}' names host op {problem}; register it with @register_host_op")
        if not self.inputs or not is_name(self.equation) or not isinstance(self.attrs, dict):
            raise PlanError(f"plan node '{self.name}': a host op needs inputs, an equation and a dict of attrs")
        if not isinstance(self.params, tuple) or not all(is_name(p) for p in self.params):
            raise PlanError(f"plan node '{self.name}': params must be a tuple of names")
        if self.output_kind not in VALUE_KINDS or self.output_time not in TIMES:
            raise PlanError(f"plan node '{self.name}': output kind/time {self.output_kind!r}/{self.output_time!r}")

    @property
    def time(self) -> Time:
        return self.output_time


NODE_KINDS: dict[str, type[PlanNode]] = {c.kind: c for c in (Input, Synapse, Neuron, Add, HostOp)}


def value_kind(node: PlanNode) -> Kind:
    return node.output_kind if isinstance(node, HostOp) else node.value_kind


# ---------------------------------------------------------------------------------------------- plan


def coverage_of(operations: list[str], covered: list[str]) -> list[str]:
    """Operations not covered, covered more than once, or covered but unknown; empty when each is covered once."""
    counts: dict[str, int] = {}
    for m in covered:
        counts[m] = counts.get(m, 0) + 1
    known = set(operations)
    problems = [f"not exported: {o}" for o in operations if counts.get(o, 0) == 0]
    problems += [f"exported {counts[o]} times: {o}" for o in operations if counts.get(o, 0) > 1]
    problems += [f"unknown operation in bundle: {m}" for m in counts if m not in known]
    return problems


@dataclass
class Plan:
    """A model as a topologically ordered list of nodes, the model's operations, and (optionally) the weights.

    Checked when built: unique names; every input names an earlier node (a DAG in schedule order); shapes agree
    along every edge; ``output`` exists; exactly one :class:`Input` node; every operation covered exactly once
    (:meth:`coverage_problems`); host ops registered (by the nodes); params, when present, are exactly the
    declared arrays and shapes.
    """

    model_name: str
    nodes: list[PlanNode]
    output: str
    operations: list[str]
    bn_fold: Literal["exact", "time_average"] = "exact"
    params: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    version: int = PLAN_VERSION

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not is_name(self.model_name):
            raise PlanError(f"plan: model_name {self.model_name!r} is not a name")
        if self.version != PLAN_VERSION:
            raise PlanError(f"plan version {self.version!r}; this svformer-deploy reads version {PLAN_VERSION}")
        if self.bn_fold not in ("exact", "time_average"):
            raise PlanError(f"plan: bn_fold {self.bn_fold!r} is not 'exact' or 'time_average'")
        shapes: dict[str, tuple[int, ...]] = {}
        for n in self.nodes:
            if not isinstance(n, PlanNode):
                raise PlanError(f"plan: {n!r} is not a plan node")
            if n.name in shapes:
                raise PlanError(f"plan: node name '{n.name}' is used twice")
            for i in n.inputs:
                if i not in shapes:
                    raise PlanError(f"plan node '{n.name}' reads '{i}', which no earlier node produces")
            try:
                n.check_inputs([shapes[i] for i in n.inputs])
            except (TypeError, ValueError) as err:
                raise PlanError(f"plan node '{n.name}' does not fit the shapes of its inputs ({err})") from None
            shapes[n.name] = n.shape
        if self.output not in shapes:
            raise PlanError(f"plan: output '{self.output}' is not a node")
        inputs = [n.name for n in self.nodes if isinstance(n, Input)]
        if len(inputs) != 1:
            raise PlanError(f"plan: {len(inputs)} input nodes {inputs[:3]}; a plan reads one input (the frames)")
        if not isinstance(self.operations, list) or not all(is_name(o) for o in self.operations):
            raise PlanError("plan: operations must be a list of names")
        problems = self.coverage_problems()
        if problems:
            raise PlanError(f"plan coverage is broken: {'; '.join(problems[:3])}")
        if self.params:
            want = {k: s for n in self.nodes for k, s in n.param_shapes().items()}
            for n in self.nodes:
                if isinstance(n, HostOp):
                    want.update({p: None for p in n.params})
            missing, extra = sorted(set(want) - set(self.params)), sorted(set(self.params) - set(want))
            if missing or extra:
                raise PlanError(f"plan params: missing {missing[:3]}, not declared {extra[:3]}")
            for k, s in want.items():
                if s is not None and tuple(self.params[k].shape) != s:
                    raise PlanError(f"plan param '{k}' has shape {tuple(self.params[k].shape)}, its node declares {s}")

    def covered(self) -> list[str]:
        """Every model operation named by a node, with repetitions (a valid plan has none)."""
        return [m for n in self.nodes for m in n.modules]

    def coverage_problems(self, operations: list[str] | None = None) -> list[str]:
        """Each of ``operations`` (default: the plan's) covered by exactly one node, and nothing else."""
        return coverage_of(self.operations if operations is None else operations, self.covered())

    def node(self, name: str) -> PlanNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise PlanError(f"plan has no node '{name}'")

    @property
    def input(self) -> Input:
        """The plan's one :class:`Input` node (the frames)."""
        return next(n for n in self.nodes if isinstance(n, Input))

    def consumers(self) -> dict[str, list[str]]:
        """node -> the nodes that read it, in plan order."""
        out: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i].append(n.name)
        return out

    def host_ops(self) -> list[str]:
        """The registered host operations the plan names (sorted)."""
        return sorted({n.op for n in self.nodes if isinstance(n, HostOp)})

    def to_dict(self) -> dict[str, Any]:
        """JSON form (structure only: the arrays go to the backend's files)."""
        return {"version": self.version, "model_name": self.model_name, "output": self.output,
                "bn_fold": self.bn_fold, "operations": list(self.operations),
                "nodes": [n.to_dict() for n in self.nodes]}

    @classmethod
    def from_dict(cls, d: Any, params: dict[str, np.ndarray] | None = None) -> "Plan":
        """Rebuild and check a plan written by :meth:`to_dict`; one :class:`PlanError` for anything wrong."""
        if not isinstance(d, dict):
            raise PlanError(f"plan is {type(d).__name__}, not a JSON object written by an exporter")
        if d.get("version") != PLAN_VERSION:
            raise PlanError(f"plan version {d.get('version')!r}; this svformer-deploy reads version {PLAN_VERSION}")
        try:
            unknown = set(d) - {"version", "model_name", "output", "bn_fold", "operations", "nodes"}
            if unknown:
                raise TypeError(f"unknown field(s) {sorted(unknown)}")
            nodes = []
            for i, nd in enumerate(d["nodes"]):
                if not isinstance(nd, dict) or nd.get("kind") not in NODE_KINDS:
                    got = nd.get("kind") if isinstance(nd, dict) else nd
                    raise PlanError(f"plan node {i} has kind {got!r}, not one of {sorted(NODE_KINDS)}")
                node_cls = NODE_KINDS[nd["kind"]]
                kw = {k: v for k, v in nd.items() if k != "kind"}
                for f in fields(node_cls):
                    if isinstance(kw.get(f.name), list):
                        kw[f.name] = tuple(kw[f.name])
                nodes.append(node_cls(**kw))
            return cls(model_name=d["model_name"], nodes=nodes, output=d["output"], operations=d["operations"],
                       bn_fold=d["bn_fold"], params=dict(params or {}))
        except (KeyError, TypeError, ValueError) as err:
            raise PlanError(f"plan is incomplete or malformed ({type(err).__name__}: {err}); re-export it") from err


# ---------------------------------------------------------------------------------------------- lowering


@dataclass(frozen=True)
class ListOf:
    """An ``nn.ModuleList`` whose every element is exactly of type ``item``."""

    item: type


LoweringFn = Callable[["Lowering", str, nn.Module, str], str]


@dataclass(frozen=True)
class _Rule:
    fn: LoweringFn | None
    children: dict[str, type | ListOf]
    optional: frozenset[str]
    functional: Callable[[nn.Module], list[str]] | None


LOWERINGS: dict[type, _Rule] = {}
"""Module type -> its lowering: ``fn(lowering, prefix, module, input node) -> output node`` and the exact type
of every child it reads (leaf types: no children, ``fn`` None: covered by the parent's rule)."""


def register_lowering(module_type: type, children: dict[str, type | ListOf] | None = None,
                      optional: Iterable[str] = (), functional: Callable[[nn.Module], list[str]] | None = None
                      ) -> Callable[[LoweringFn | None], LoweringFn | None]:
    """Register how ``module_type`` lowers (a decorator; ``register_lowering(T)(None)`` for a leaf that its
    parent's rule handles). ``children``: the exact type of each child the rule reads; ``optional``: children
    that may be absent; ``functional`` (root types): the operations the model's forward writes outside modules
    (residual adds, concats), which the plan must cover too. A new model family plugs in by registering its
    module types."""

    def deco(fn: LoweringFn | None) -> LoweringFn | None:
        LOWERINGS[module_type] = _Rule(fn, dict(children or {}), frozenset(optional), functional)
        return fn

    return deco


def check_supported(model: nn.Module) -> None:
    """Raise :class:`UnsupportedLayerError` for the first module the lowering table does not cover.

    Walks the model from the root: every module must be exactly of the type its parent's rule expects at that
    attribute (a subclass may change ``forward``, so it is refused too), and have no child the rule does not
    know; a non-optional child must be present. A training-mode ``DropPath`` with p > 0 is refused.
    """
    def refuse(name: str, module: nn.Module, want: type | None) -> UnsupportedLayerError:
        what = f"expected {want.__module__}.{want.__qualname__}" if want is not None else "no export rule"
        return UnsupportedLayerError(
            f"module '{name or '<root>'}' of type {type(module).__module__}.{type(module).__qualname__} is not "
            f"supported by the exporter ({what} at this position); export an unmodified model from "
            "create_model(), or register a lowering for it (svformer_deploy.exporters.plan.register_lowering)")

    def walk(name: str, module: nn.Module, want: type | ListOf | None) -> None:
        if isinstance(want, ListOf):
            if type(module) is not nn.ModuleList:
                raise refuse(name, module, nn.ModuleList)
            for i, child in module.named_children():
                walk(f"{name}.{i}", child, want.item)
            return
        if want is None or type(module) is not want or want not in LOWERINGS:
            raise refuse(name, module, want)
        if getattr(module, "training", False) and getattr(module, "p", 0) > 0 and not list(module.children()):
            raise UnsupportedLayerError(f"module '{name}' ({type(module).__name__}) is in training mode; call "
                                        "model.eval() first")
        rule = LOWERINGS[want]
        present = dict(module.named_children())
        for child_name, child in present.items():
            walk(f"{name}.{child_name}" if name else child_name, child, rule.children.get(child_name))
        for child_name in rule.children:
            if child_name not in present and child_name not in rule.optional:
                raise UnsupportedLayerError(f"module '{name}' has no '{child_name}', which its export rule needs; "
                                            "export an unmodified model from create_model()")

    root = type(model)
    if root not in LOWERINGS or LOWERINGS[root].fn is None:
        raise refuse("", model, None)
    walk("", model, root)


def model_operations(model: nn.Module) -> list[str]:
    """Every operation the export must account for: leaf modules (dotted names) and the functional operations
    the model's forward writes, as its root lowering declares them (e.g. ``<block>:add1``,
    ``forward_features:cat``)."""
    ops = [n for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    rule = LOWERINGS.get(type(model))
    return ops + (rule.functional(model) if rule is not None and rule.functional is not None else [])


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy().copy()


class Lowering:
    """The state of one lowering: nodes in order and their arrays. Rules call its methods."""

    def __init__(self, model: nn.Module, approximate_bn: bool, with_params: bool) -> None:
        self.model = model
        self.approximate_bn = approximate_bn
        self.with_params = with_params
        self.nodes: list[PlanNode] = []
        self.params: dict[str, np.ndarray] = {}
        self._shape: dict[str, tuple[int, ...]] = {}

    def shape(self, value: str) -> tuple[int, ...]:
        return self._shape[value]

    def emit(self, node: PlanNode, params: dict[str, np.ndarray] | None = None) -> str:
        if node.name in self._shape:
            raise PlanError(f"internal error: plan node '{node.name}' emitted twice")
        self.nodes.append(node)
        self._shape[node.name] = node.shape
        if self.with_params and params:
            self.params.update(params)
        return node.name

    def lower(self, prefix: str, module: nn.Module, x: str) -> str:
        """Lower ``module`` (named ``prefix``) applied to value ``x`` with its registered rule."""
        rule = LOWERINGS.get(type(module))
        if rule is None or rule.fn is None:
            raise UnsupportedLayerError(f"module '{prefix}' of type {type(module).__qualname__} has no lowering; "
                                        "register one with svformer_deploy.exporters.plan.register_lowering")
        return rule.fn(self, prefix, module, x)

    def input(self, name: str, shape: tuple[int, ...]) -> str:
        return self.emit(Input(name, (), tuple(shape), ()))

    def neuron(self, name: str, module: nn.Module, x: str) -> str:
        return self.emit(Neuron(name, (x,), self.shape(x), (name,), tau=plif_tau(module),
                                v_threshold=float(module.v_threshold), layout=str(module.layout)))

    def add(self, name: str, a: str, b: str, modules: tuple[str, ...]) -> str:
        return self.emit(Add(name, (a, b), self.shape(a), modules))

    def host(self, node: HostOp, params: dict[str, np.ndarray] | None = None) -> str:
        return self.emit(node, params)

    def synapse(self, name: str, module: nn.Module, x: str, bn: nn.Module | None = None,
                modules: tuple[str, ...] | None = None, rows: slice | None = None,
                shares: tuple[str, ...] = ()) -> str:
        """A conv or token-wise Linear (``rows``: only those output rows), BN folded, depthwise made dense."""
        w, b, stride, pad, groups = synapse_params(module)
        if groups != 1:
            if groups != w.shape[0] or w.shape[1] != 1:
                raise UnsupportedLayerError(f"module '{name}' is a grouped conv (groups={groups}) that is neither "
                                            "dense nor depthwise; no lowering rule")
            w = dense_from_depthwise(w)
        if stride[0] != stride[1] or pad[0] != pad[1] or w.shape[2] != w.shape[3]:
            raise UnsupportedLayerError(f"module '{name}': only square kernels, strides and paddings are lowered")
        time_varying = bn is not None and bn_affine_is_per_timestep(bn) and not self.approximate_bn
        w, b = fold_bn_per_timestep(w, b, bn) if time_varying else fold_bn(w, b, bn, self.approximate_bn)
        T = w.shape[0] if time_varying else 0
        if rows is not None:
            w, b = w[..., rows, :, :, :], b[..., rows]
        c, h, wd = self.shape(x)
        k, s, p = w.shape[-1], stride[0], pad[0]
        out = (w.shape[-4], (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1)
        node = Synapse(name, (x,), out, modules if modules is not None else (name,), kernel=k, stride=s, padding=p,
                       in_channels=w.shape[-3], shares=shares, time_varying=time_varying, num_steps=T)
        return self.emit(node, {f"{name}.weight": w, f"{name}.bias": b})


def bn_affine_is_per_timestep(bn: nn.Module) -> bool:
    """Whether a BatchNorm keeps statistics per timestep (a ``TemporalBatchNorm`` with ``mode != 'shared'``)."""
    return getattr(bn, "mode", "shared") != "shared"


def lower(model: nn.Module, approximate_bn: bool = False, with_params: bool = True) -> Plan:
    """Lower an eval-mode model into a :class:`Plan` with the rules of :data:`LOWERINGS`.

    Per-timestep BatchNorm folds into time-varying synapses, or (``approximate_bn``) into its time average,
    recorded as ``bn_fold = "time_average"``. ``with_params=False`` builds the structure without arrays.
    """
    check_supported(model)
    model = model.eval()
    ctx = Lowering(model, approximate_bn, with_params)
    c, _, h, w = model.config.input_shape
    x = ctx.input("frames", (c, h, w))
    out = ctx.lower("", model, x)
    per_t = any(bn_affine_is_per_timestep(m) for m in model.modules() if hasattr(m, "affine"))
    return Plan(model.config.name, ctx.nodes, out, model_operations(model),
                bn_fold="time_average" if approximate_bn and per_t else "exact", params=ctx.params)


# ---------------------------------------------------------------------------------------------- cut


@dataclass(frozen=True)
class Capabilities:
    """What a target can hold: node kinds, residual joins (several edges summed into one node) or chains only
    (spikes in -> synapse -> neuron -> ... one input, one output), and per-timestep (time-varying) weights."""

    target: str
    node_kinds: frozenset[str]
    residual_joins: bool = True
    time_varying_weights: bool = False


@dataclass(frozen=True)
class PlanPartition:
    """A connected run of plan nodes a target holds: ``nodes`` in plan order, ``inputs`` the values it reads
    from outside, ``outputs`` the values read outside it (or the plan's output)."""

    name: str
    nodes: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class HostStep:
    """A plan node the target does not hold, run by the host."""

    node: str


def partition_coverage(plan: Plan, part: PlanPartition) -> list[str]:
    """The model operations ``part`` covers, in plan order: the modules of every node it computes *completely*
    (each input is a partition input or itself complete: not a concat of which only a slice is inside) whose
    value is used only inside the partition or is one of its outputs. A node whose value the host needs but
    the partition does not output (a chain's synapse that also feeds a residual add) is the host's."""
    nodes = {n.name: n for n in plan.nodes}
    readers = plan.consumers()
    inside, outputs = set(part.nodes), set(part.outputs)
    complete = set(part.inputs)
    out: list[str] = []
    for name in part.nodes:
        if not all(i in complete for i in nodes[name].inputs):
            continue
        complete.add(name)
        if name in outputs or all(r in inside for r in readers[name]):
            out += nodes[name].modules
    return out


def _check_weights(plan: Plan, caps: Capabilities, nodes: Iterable[PlanNode]) -> None:
    for n in nodes:
        if isinstance(n, Synapse) and n.time_varying and not caps.time_varying_weights:
            raise PerTimestepBNError(
                f"plan node '{n.name}' has per-timestep weights (per-timestep BatchNorm, its own statistics for each "
                f"of the T={n.num_steps} timesteps), which a '{caps.target}' partition cannot hold; train the model "
                "with bn='shared' (`train --set bn=shared`), convert this checkpoint with `svformer-deploy finetune CKPT "
                "--bn shared` (distils it into shared BN, usually recovering the accuracy), or pass --approximate-bn to "
                "fold the time-averaged BatchNorm (verification then reports the accuracy and spike-agreement cost "
                "on real clips)")


def cut(plan: Plan, caps: Capabilities) -> list[PlanPartition | HostStep]:
    """Split ``plan`` into partitions and host steps, in plan order.

    Graph targets (``residual_joins``): a maximal run of consecutive nodes of held kinds is one partition; a
    node of another kind (a host op) is a host step and ends the run. Chain-only targets: every maximal chain
    ``neuron -> synapse(s) -> neuron [-> synapse(s) -> neuron ...]`` (see :func:`chain_links`) is one partition
    named ``<source neuron>><last neuron>`` that reads the source neuron's spikes; an inner neuron continues the
    chain only if its spikes feed nothing else. The rest runs on the host around them (no host steps are
    listed: the backend's host op runs the model and calls the partitions). Synapses with per-timestep weights
    are refused unless the target holds them.
    """
    nodes = {n.name: n for n in plan.nodes}
    readers = plan.consumers()
    if caps.residual_joins:
        _check_weights(plan, caps, plan.nodes)
        steps: list[PlanPartition | HostStep] = []
        run: list[str] = []

        def close() -> None:
            if run:
                inside = set(run)
                ins = tuple(dict.fromkeys(i for r in run for i in nodes[r].inputs if i not in inside))
                outs = tuple(r for r in run if r == plan.output or any(c not in inside for c in readers[r]))
                steps.append(PlanPartition(f"partition_{sum(isinstance(s, PlanPartition) for s in steps)}",
                                           tuple(run), ins, outs))
                run.clear()

        for n in plan.nodes:
            if isinstance(n, Input):
                continue
            if n.kind in caps.node_kinds:
                run.append(n.name)
            else:
                close()
                steps.append(HostStep(n.name))
        close()
        return steps
    return _chains(plan, caps, nodes, readers)


def _composable(n: PlanNode) -> bool:
    """A synapse that can be folded into the one before it exactly (1x1, stride 1, no padding, fixed weights)."""
    return isinstance(n, Synapse) and n.kernel == 1 and n.stride == 1 and n.padding == 0 and not n.time_varying


def chain_links(plan: Plan, neuron: str,
                readers: dict[str, list[str]] | None = None) -> list[tuple[tuple[str, ...], str]]:
    """The ways a chain continues from ``neuron``'s spikes: ``(path, next neuron)`` where ``path`` is a synapse,
    then 1x1 synapses each reading only the previous one (composable into one layer), optionally ending in a
    ``concat`` host op that only neurons read (an elementwise neuron on a channel slice); in plan order."""
    readers = plan.consumers() if readers is None else readers
    nodes = {n.name: n for n in plan.nodes}
    out: list[tuple[tuple[str, ...], str]] = []

    def follow(path: tuple[str, ...]) -> None:
        last = path[-1]
        for r in readers[last]:
            node = nodes[r]
            if isinstance(node, Neuron):
                out.append((path, r))
            elif len(readers[last]) == 1 and _composable(node) and not isinstance(nodes[last], HostOp):
                follow((*path, r))
            elif (len(readers[last]) == 1 and isinstance(node, HostOp) and node.op == "concat"
                  and node.attrs.get("axis") == 0 and not isinstance(nodes[last], HostOp)):
                for n2 in readers[r]:
                    if isinstance(nodes[n2], Neuron):
                        out.append(((*path, r), n2))

    for s in readers[neuron]:
        if isinstance(nodes[s], Synapse):
            follow((s,))
    return out


def _chains(plan: Plan, caps: Capabilities, nodes: dict[str, PlanNode],
            readers: dict[str, list[str]]) -> list[PlanPartition | HostStep]:
    parts: list[PlanPartition | HostStep] = []
    continued: set[tuple[str, str]] = set()
    for n in plan.nodes:
        if not isinstance(n, Neuron):
            continue
        for path, nxt in chain_links(plan, n.name, readers):
            if (n.name, nxt) in continued:
                continue
            chain = [*path, nxt]
            while len(readers[chain[-1]]) == 1:
                more = chain_links(plan, chain[-1], readers)
                if len(more) != 1:
                    break
                continued.add((chain[-1], more[0][1]))
                chain += [*more[0][0], more[0][1]]
            _check_weights(plan, caps, (nodes[c] for c in chain))
            parts.append(PlanPartition(f"{n.name}>{chain[-1]}", tuple(chain), (n.name,), (chain[-1],)))
    return parts
