"""NIR partition runtimes: each scheduled partition of a NIR bundle as a :class:`PartitionRunner` for the bundle
runner (:func:`svformer_deploy.exporters.runtime.run_bundle`; host operations run from the host-op registry).

Partition runtimes:

``"snntorch"``
    The partition is imported by ``snntorch.import_nir.import_from_nir`` (an independent implementation of
    NIR's node semantics: its LIF is ``snn.Leaky`` with ``beta = 1 - dt/tau``, threshold scaled by
    ``1 / (r dt / tau)``, zero reset, spike on ``mem - threshold > 0``, dt = 1e-4 hard-coded). A partition with
    one ``Input`` and one ``Output`` node is imported whole (``"snntorch-graph"``: nirtorch wires and sums the
    edges). nirtorch 2.6 cannot build graphs with several ``Input`` nodes ("Node redefined name is_none!") and
    did not finish building one with several ``Output`` nodes, so such partitions are imported node by node
    (``"snntorch-nodes"``: each node as a one-node graph; our executor sums the edges into a node in their
    listed order). Partitions with node types snntorch lacks fall back to the reference interpreter, and the
    run says so.
``"reference"``
    Our interpreter of the NIR semantics: ``Conv2d``/``Affine``/``Linear``/``Scale`` as written, ``LIF`` by its
    forward-Euler step ``v <- v + (dt/tau) ((v_leak - v) + r I)`` with the bundle's dt, spike ``v > v_threshold``
    (strict), ``v <- v_reset`` on spike.
``"reference-nonstrict"``
    A diagnostic, not NIR semantics: the reference interpreter with the source model's spike condition
    ``v >= v_threshold``. Where the first divergence of a ``threshold`` verdict is at exact ties, it shows
    whether anything else in the bundle differs (a mapping error further on would otherwise be hidden by the
    propagated flips).
any other registered :class:`NodeRuntime`
    A second NIR implementation, added in its own module with :func:`register_node_runtime` (e.g. norse, in
    :mod:`svformer_deploy.exporters.nir.norse`): partitions are imported node by node and wired by our
    executor, exactly as ``"snntorch-nodes"``.
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from svformer_deploy.errors import VerificationError
from svformer_deploy.exporters.bundle import Manifest
from svformer_deploy.exporters.nir.lowering import DT
from svformer_deploy.exporters.runtime import BundleRun, run_bundle
from svformer_deploy.models.recording import forward_hooks

__all__ = ["PartitionRunner", "nir_runners", "run_nir_bundle", "load_partitions", "NodeRuntime",
           "NODE_RUNTIMES", "register_node_runtime", "runtime_notes", "SNNTORCH_NODE_TYPES"]


SNNTORCH_NODE_TYPES = ("Affine", "Linear", "Conv2d", "Flatten", "AvgPool2d", "IF", "LIF", "CubaLIF")


def _topo_order(graph) -> list[str]:
    incoming = defaultdict(list)
    for s, d in graph.edges:
        incoming[d].append(s)
    order, seen = [], set()

    def visit(n: str, stack: tuple = ()) -> None:
        if n in seen:
            return
        if n in stack:
            raise VerificationError(f"partition has a cycle through node {n}; recurrent partitions are not supported")
        for s in incoming[n]:
            visit(s, stack + (n,))
        seen.add(n)
        order.append(n)

    for n in graph.nodes:
        visit(n)
    return order


class _RefLIF:
    """NIR LIF by forward Euler with step DT (our reference semantics); spike ``v > v_threshold``, or
    ``v >= v_threshold`` with ``strict=False`` (the source model's condition, for the diagnostic runtime)."""

    def __init__(self, node, dt: float = DT, strict: bool = True) -> None:
        f = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
        self.k = (dt / f(node.tau)).float()
        self.r, self.v_leak = f(node.r).float(), f(node.v_leak).float()
        self.v_th, self.v_reset = f(node.v_threshold).float(), f(node.v_reset).float()
        self.trivial = bool((self.r == 1).all() and (self.v_leak == 0).all())
        self.strict = strict
        self.v: Tensor | None = None

    def reset(self) -> None:
        self.v = None

    def __call__(self, i: Tensor) -> Tensor:
        v = torch.zeros_like(i) if self.v is None else self.v
        drive = i if self.trivial else (self.v_leak - v) + self.r * i + v  # (v_leak - v) + r I, plus v back
        h = v + (drive - v) * self.k  # = v + k ((v_leak - v) + r I); written as PLIF rounds when r=1, v_leak=0
        z = h > self.v_th if self.strict else h >= self.v_th
        self.v = torch.where(z, self.v_reset.expand_as(h), h)
        return z.to(i.dtype)


def _ref_module(node, dt: float = DT, strict: bool = True):
    import nir

    if isinstance(node, nir.Conv2d):
        w, b = torch.as_tensor(node.weight), torch.as_tensor(node.bias)
        return lambda x: F.conv2d(x, w, b, tuple(node.stride), tuple(node.padding), tuple(node.dilation), node.groups)
    if isinstance(node, nir.Affine):
        w, b = torch.as_tensor(node.weight), torch.as_tensor(node.bias)
        return lambda x: F.linear(x, w, b)
    if isinstance(node, nir.Linear):
        w = torch.as_tensor(node.weight)
        return lambda x: F.linear(x, w)
    if isinstance(node, nir.Scale):
        s = torch.as_tensor(node.scale)
        return lambda x: x * s
    if isinstance(node, nir.LIF):
        return _RefLIF(node, dt, strict)
    raise VerificationError(f"the reference interpreter has no rule for NIR node type {type(node).__name__}")


def _snntorch_module(name: str, node):
    """Import one node through snntorch's ``import_from_nir`` (as a one-node graph Input -> node -> Output)."""
    import nir
    from snntorch.import_nir import import_from_nir

    in_shape = np.array(next(iter(node.input_type.values())))
    out_shape = np.array(next(iter(node.output_type.values())))
    g = nir.NIRGraph(nodes={"input": nir.Input({"input": in_shape}), "node": node,
                            "output": nir.Output({"output": out_shape})},
                     edges=[("input", "node"), ("node", "output")], type_check=False)
    with contextlib.redirect_stdout(io.StringIO()):  # the importer prints a warning per LIF node
        gm = import_from_nir(g)
    return gm


NodeModule = Callable[[Tensor], Tensor]
"""One NIR node as a stateful callable ``y = f(x)`` for one timestep; a ``reset()`` method (on a callable that
is not a torch module), if it has one, zeroes its state before each clip batch."""


@dataclass(frozen=True)
class NodeRuntime:
    """A partition runtime that imports a NIR partition node by node: ``build(node_name, node, dt)`` returns a
    :data:`NodeModule`; ``node_types`` are the NIR node class names it implements (a partition with others
    falls back to the reference interpreter, and the run says so); ``note`` says what it is, for the report."""

    name: str
    build: Callable[[str, object, float], NodeModule]
    node_types: tuple[str, ...]
    note: str


NODE_RUNTIMES: dict[str, NodeRuntime] = {}


def register_node_runtime(runtime: NodeRuntime) -> NodeRuntime:
    """Add a partition runtime (a second NIR implementation plugs in here, from its own module)."""
    NODE_RUNTIMES[runtime.name] = runtime
    return runtime


_REFERENCE_NODE_TYPES = ("Conv2d", "Affine", "Linear", "Scale", "LIF")
register_node_runtime(NodeRuntime("reference", lambda _n, node, dt: _ref_module(node, dt), _REFERENCE_NODE_TYPES,
                                  "svformer-deploy's own NIR interpreter"))
register_node_runtime(NodeRuntime("reference-nonstrict", lambda _n, node, dt: _ref_module(node, dt, strict=False),
                                  _REFERENCE_NODE_TYPES,
                                  "diagnostic, not NIR semantics: svformer-deploy's own NIR interpreter with the "
                                  "source model's spike condition v >= v_threshold (NIR: v > v_threshold), so exact "
                                  "ties fire as in the model"))
register_node_runtime(NodeRuntime("snntorch-nodes", lambda n, node, _dt: _snntorch_module(n, node),
                                  SNNTORCH_NODE_TYPES, "every node imported by snntorch.import_nir.import_from_nir, "
                                  "edges wired and summed by svformer-deploy (nirtorch 2.6 cannot build graphs with "
                                  "several Input/Output nodes)"))
_SNNTORCH_GRAPH_NOTE = "whole partition imported by snntorch.import_nir.import_from_nir"


def runtime_notes(names) -> dict[str, str]:
    """What each partition runtime in ``names`` is (for the verification report)."""
    notes = {k: v.note for k, v in NODE_RUNTIMES.items()} | {"snntorch-graph": _SNNTORCH_GRAPH_NOTE}
    return {n: notes.get(n, n) for n in sorted(set(names))}


class PartitionRunner:
    """Runs one partition timestep by timestep; ``reset()`` before each clip batch.

    ``runtime="snntorch"`` imports a one-Input, one-Output partition whole through snntorch (else node by node,
    ``"snntorch-nodes"``); any other name is a registered :class:`NodeRuntime`. ``dt`` is the bundle's timestep,
    for runtimes that take it from the caller (snntorch hard-codes 1e-4)."""

    def __init__(self, name: str, graph, runtime: str = "snntorch", dt: float = DT) -> None:
        import nir

        self.name = name
        self.graph = graph
        self.order = _topo_order(graph)
        self.incoming: dict[str, list[str]] = defaultdict(list)
        for s, d in graph.edges:
            self.incoming[d].append(s)
        inner = {k: n for k, n in graph.nodes.items() if not isinstance(n, (nir.Input, nir.Output))}
        self.lif_nodes = [k for k, n in inner.items() if isinstance(n, nir.LIF)]
        self.inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
        self.outputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Output)]
        self.whole = None
        if runtime == "snntorch":
            runtime = "snntorch-nodes"
            if len(self.inputs) == 1 and len(self.outputs) == 1 and self._supports(runtime, inner):
                from snntorch.import_nir import import_from_nir

                with contextlib.redirect_stdout(io.StringIO()):  # the importer prints a warning per LIF node
                    self.whole = import_from_nir(graph)
                self._lif_modules = {k: self.whole.get_submodule(k.replace(".", "_")) for k in self.lif_nodes}
                self.modules = {"graph": self.whole}
                self.runtime = "snntorch-graph"
                return
        if runtime not in NODE_RUNTIMES:
            raise VerificationError(f"unknown partition runtime {runtime!r}; known: snntorch, "
                                    f"{', '.join(sorted(NODE_RUNTIMES))}")
        if not self._supports(runtime, inner):
            runtime = "reference"
        build = NODE_RUNTIMES[runtime].build
        self.modules = {k: build(k, n, dt) for k, n in inner.items()}
        self.runtime = runtime

    @staticmethod
    def _supports(runtime: str, inner: dict) -> bool:
        return all(type(n).__name__ in NODE_RUNTIMES[runtime].node_types for n in inner.values())

    def reset(self) -> None:
        for m in self.modules.values():
            if not isinstance(m, torch.nn.Module) and hasattr(m, "reset"):
                m.reset()
            elif isinstance(m, torch.nn.Module):
                import snntorch as snn

                for sub in m.modules():
                    if isinstance(sub, snn.SpikingNeuron) and hasattr(sub, "mem"):
                        sub.mem = torch.zeros(0)  # snntorch re-initialises to zeros of the input's shape

    @torch.no_grad()
    def step(self, inputs: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """One timestep: ``inputs`` maps Input node names to (B, ...) tensors. Returns (outputs by Output node
        name, spikes by LIF node name)."""
        import nir

        if self.whole is not None:
            captured: dict[str, Tensor] = {}

            def keep(k: str):
                return lambda _m, _i, out: captured.__setitem__(k, out[0] if isinstance(out, tuple) else out)

            with forward_hooks((m, keep(k)) for k, m in self._lif_modules.items()):
                y = self.whole(inputs[self.inputs[0]])
            y = y[0] if isinstance(y, tuple) else y
            return {self.outputs[0]: y}, {k: captured[k] for k in self.lif_nodes}
        vals: dict[str, Tensor] = {}
        outs: dict[str, Tensor] = {}
        for n in self.order:
            node = self.graph.nodes[n]
            if isinstance(node, nir.Input):
                vals[n] = inputs[n]
                continue
            srcs = self.incoming[n]
            x = vals[srcs[0]]
            for s in srcs[1:]:
                x = x + vals[s]
            if isinstance(node, nir.Output):
                outs[n] = x
                continue
            y = self.modules[n](x)
            if isinstance(y, tuple):  # nirtorch GraphModule returns (output, state)
                y = y[0]
            vals[n] = y
        return outs, {k: vals[k] for k in self.lif_nodes}


def load_partitions(bundle: str | Path, manifest: Manifest, type_check: bool = True) -> dict:
    """``nir.read`` every partition file (with type checking); a failure raises :class:`VerificationError`."""
    import nir

    graphs = {}
    for p in manifest.partitions:
        path = Path(bundle) / p.file
        try:
            graphs[p.name] = nir.read(path, type_check=type_check)
        except Exception as err:  # nir raises bare ValueError/KeyError/AssertionError
            raise VerificationError(f"nir.read(type_check={type_check}) refused {path}: {err}") from err
    return graphs


def check_partition_signals(bundle: str | Path, manifest: Manifest, graphs: dict) -> None:
    """Every Input/Output node a partition binds exists in its file and has the shape of its signal."""
    from svformer_deploy.errors import BundleFormatError

    for p in manifest.partitions:
        nodes = graphs[p.name].nodes
        for node, sig in [*p.inputs.items(), *p.outputs.items()]:
            if node not in nodes:
                raise BundleFormatError(f"{bundle}: partition '{p.name}' binds node '{node}', which {p.file} does not "
                                        "have; re-export the bundle")
            types = nodes[node].input_type if node in p.inputs else nodes[node].output_type
            shape = tuple(int(n) for n in np.asarray(next(iter(types.values()))).reshape(-1))
            if shape != manifest.signals[sig].shape:
                raise BundleFormatError(f"{bundle}: signal '{sig}' has shape {manifest.signals[sig].shape} in the "
                                        f"manifest but {shape} at node '{node}' of {p.file}; re-export the bundle")


def nir_runners(manifest: Manifest, graphs: dict, runtime: str = "snntorch") -> dict[str, PartitionRunner]:
    """A :class:`PartitionRunner` in ``runtime`` for every scheduled partition of the NIR bundle ``manifest``
    (``graphs``: its partition files as :func:`load_partitions` reads them)."""
    return {s["partition"]: PartitionRunner(s["partition"], graphs[s["partition"]], runtime, manifest.dt)
            for s in manifest.schedule if "partition" in s}


def run_nir_bundle(manifest: Manifest, graphs: dict, host_params: dict[str, Tensor], clips: Tensor,
                   runtime: str = "snntorch") -> BundleRun:
    """Run a NIR bundle on normalised clips (B, C, T, H, W): its partitions in ``runtime``
    (:func:`nir_runners`), its host ops from the registry (:func:`~svformer_deploy.exporters.runtime.run_bundle`)."""
    return run_bundle(manifest, host_params, clips, runners=nir_runners(manifest, graphs, runtime))
