"""The network a chip holds, derived from an export plan: one layer per on-chip neuron group.

A chip has neurons (compartments) and synapses between them; it has no place to keep an analog value between two
neurons. So every linear node of the plan (a :class:`~svformer_deploy.exporters.plan.Synapse`, a residual
:class:`~svformer_deploy.exporters.plan.Add`, a channel ``concat``) is *expanded into the neurons that read it*:

    I_L[t] = sum_terms  K_term * s_source[t]  +  sum_host_terms H_term(x_source[t])  +  beta_L

* a **spike term** ``K * s``: the spikes of a source neuron group through the composition of the linear nodes on
  the path to ``L`` -- convolutions with at most one spatial kernel (k > 1, stride or padding) and any number of
  1x1 ones compose exactly into one convolution ``K = P_post . W_spatial . P_pre`` (a concat is a 1x1 placement);
  a residual join simply gives ``L`` the terms of both branches (dendritic summation);
* a **host term** ``H(x)``: a path that starts at an analog value (the input frames, the output of a host operation
  such as the spike-attention product) is computed by the host, which sends the current to ``L``'s compartments
  every timestep;
* ``beta_L``: the biases of every linear node on every path, propagated exactly through the later convolutions
  (zero padding included), so it is one bias per compartment.

Source neurons are on the chip or on the host (a bundle whose partitions leave them to the host, as Lava's
chains leave each chain's source neuron); host neurons send their spikes into the chip.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from svformer_deploy.errors import UnsupportedLayerError
from svformer_deploy.exporters.plan import HostOp, Input, Neuron, Plan, Synapse

__all__ = ["LINEAR_HOST_OPS", "ChipLayer", "ChipNetwork", "HostTerm", "LinearOp", "SpikeTerm", "derive_network"]

LINEAR_HOST_OPS = frozenset({"concat"})
"""Host operations that are pure routing and therefore expand into the neurons reading them (channel concat)."""


@dataclass(frozen=True)
class LinearOp:
    """One convolution of a path, without bias: ``y = conv2d(x, weight, stride, padding)``, weight (O, I, k, k)."""

    name: str
    weight: np.ndarray = field(repr=False)
    stride: int = 1
    padding: int = 0
    routing: bool = False
    """A channel placement (concat): moves values, computes nothing."""

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[-1])

    @property
    def pointwise(self) -> bool:
        return self.kernel == 1 and self.stride == 1 and self.padding == 0

    def identity(self) -> tuple:
        """What the op computes (name, geometry and a digest of the weight): two host terms whose op sequences
        have equal identities from the same source compute the same values."""
        import hashlib

        digest = hashlib.blake2b(np.ascontiguousarray(self.weight).tobytes(), digest_size=16).hexdigest()
        return (self.name, self.weight.shape, str(self.weight.dtype), self.stride, self.padding, self.routing, digest)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, I, H, W) float64 -> (N, O, H', W')."""
        return F.conv2d(x, torch.as_tensor(self.weight, dtype=x.dtype), stride=self.stride, padding=self.padding)


def _compose(ops: list[LinearOp], where: str) -> tuple[np.ndarray, int, int]:
    """One convolution equal to ``ops`` applied in order: (weight (O, I, k, k), stride, padding).

    Exact when at most one op is spatial and the others are 1x1 with stride 1 and no padding (biases are kept
    apart, in beta). Two spatial convolutions with no neuron between them have no exact one-layer form."""
    spatial = [i for i, op in enumerate(ops) if not op.pointwise]
    if len(spatial) > 1:
        names = ", ".join(ops[i].name for i in spatial)
        raise UnsupportedLayerError(f"{where}: the linear path {' -> '.join(o.name for o in ops)} holds two spatial "
                                    f"convolutions ({names}) with no neuron between them; a chip synapse is one "
                                    "convolution, so this path has no exact mapping (put a neuron between them)")
    if not spatial:
        m = ops[0].weight[:, :, 0, 0]
        for op in ops[1:]:
            m = op.weight[:, :, 0, 0] @ m
        return m[:, :, None, None], 1, 0
    i = spatial[0]
    pre = np.eye(ops[0].weight.shape[1])
    for op in ops[:i]:
        pre = op.weight[:, :, 0, 0] @ pre
    post = np.eye(ops[i].weight.shape[0])
    for op in ops[i + 1:]:
        post = op.weight[:, :, 0, 0] @ post
    w = np.tensordot(np.tensordot(post, ops[i].weight, axes=(1, 0)), pre, axes=(1, 0)).transpose(0, 3, 1, 2)
    return w, ops[i].stride, ops[i].padding


@dataclass(frozen=True)
class SpikeTerm:
    """Spikes of ``source`` (C_in, H, W) -> currents of the layer through one convolution (its composed path)."""

    source: str
    on_chip: bool
    in_shape: tuple[int, int, int]
    weight: np.ndarray = field(repr=False)
    stride: int
    padding: int
    path: tuple[str, ...]

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[-1])


@dataclass(frozen=True)
class HostTerm:
    """An analog value ``source`` that the host turns into currents of the layer: ``ops`` applied in order."""

    source: str
    ops: tuple[LinearOp, ...]

    def prefixes(self) -> list[tuple]:
        """The key of each partial result, ``(source, identity of op 1, ..., identity of op i)`` for i = 1..n: the
        host computes a partial result that several terms share once (see :mod:`svformer_deploy.chip.run`)."""
        keys, key = [], (self.source,)
        for op in self.ops:
            key += (op.identity(),)
            keys.append(key)
        return keys

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            x = op.apply(x)
        return x


@dataclass(frozen=True)
class ChipLayer:
    """One on-chip neuron group (a PLIF layer of the plan) and everything that drives it."""

    name: str
    shape: tuple[int, int, int]
    tau: float
    v_threshold: float
    terms: tuple[SpikeTerm, ...]
    host_terms: tuple[HostTerm, ...]
    bias: np.ndarray = field(repr=False)  # (C, H, W) float64

    @property
    def kernel_weights(self) -> int:
        """Non-zero float weights of the spike terms' kernels (what rounding to 0 is counted against)."""
        return sum(int(np.count_nonzero(t.weight)) for t in self.terms)

    @property
    def neurons(self) -> int:
        c, h, w = self.shape
        return c * h * w


@dataclass(frozen=True)
class ChipNetwork:
    """The layers a chip holds (plan order), the neurons the host computes, and the plan they come from."""

    plan: Plan
    layers: tuple[ChipLayer, ...]
    host_neurons: tuple[str, ...]

    def layer(self, name: str) -> ChipLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def host_spike_sources(self) -> list[str]:
        """Host neurons whose spikes some chip layer reads (they enter the chip as input neurons)."""
        seen = dict.fromkeys(t.source for layer in self.layers for t in layer.terms if not t.on_chip)
        return list(seen)

    def chip_consumers(self) -> dict[str, list[tuple[str, int]]]:
        """source -> [(chip layer, term index)] of every spike term reading it."""
        out: dict[str, list[tuple[str, int]]] = {}
        for layer in self.layers:
            for i, t in enumerate(layer.terms):
                out.setdefault(t.source, []).append((layer.name, i))
        return out


@dataclass
class _Expansion:
    spikes: list[tuple[str, list[LinearOp]]]
    host: list[tuple[str, list[LinearOp]]]
    beta: np.ndarray  # (C, H, W)


def _placement(rows: int, offset: int, total: int, name: str) -> LinearOp:
    w = np.zeros((total, rows, 1, 1))
    w[offset + np.arange(rows), np.arange(rows), 0, 0] = 1.0
    return LinearOp(f"{name}[{offset}:{offset + rows}]", w, routing=True)


def _synapse_ops(plan: Plan, s: Synapse) -> tuple[np.ndarray, np.ndarray]:
    if s.time_varying:
        from svformer_deploy.exporters.fold import PerTimestepBNError

        raise PerTimestepBNError(
            f"plan node '{s.name}' has per-timestep weights (per-timestep BatchNorm), which a chip's fixed synapses "
            "cannot hold; export a model with shared BatchNorm (`svformer-deploy finetune CKPT --bn shared`) or "
            "export with --approximate-bn")
    return plan.params[f"{s.name}.weight"], plan.params[f"{s.name}.bias"]


def _conv_beta(beta: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int) -> np.ndarray:
    x = torch.as_tensor(beta, dtype=torch.float64)[None]
    y = F.conv2d(x, torch.as_tensor(w, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                 stride=stride, padding=padding)
    return y[0].numpy()


def _expand(plan: Plan, name: str, memo: dict[str, _Expansion]) -> _Expansion:
    """Terms and beta of plan node ``name``'s value (see the module docstring)."""
    if name in memo:
        return memo[name]
    node = plan.node(name)
    zero = np.zeros(node.shape if len(node.shape) == 3 else (1, 1, 1))
    if isinstance(node, Neuron):
        out = _Expansion([(name, [])], [], zero)
    elif isinstance(node, Input) or (isinstance(node, HostOp) and node.op not in LINEAR_HOST_OPS):
        if len(node.shape) != 3:
            raise UnsupportedLayerError(f"plan node '{name}' ({node.kind}) produces a {node.shape} value that a chip "
                                        "neuron reads; only (C, H, W) maps can drive chip neurons")
        out = _Expansion([], [(name, [])], zero)
    elif isinstance(node, Synapse):
        w, b = _synapse_ops(plan, node)
        op = LinearOp(name, w, node.stride, node.padding)
        src = _expand(plan, node.inputs[0], memo)
        out = _Expansion([(s, [*ops, op]) for s, ops in src.spikes], [(s, [*ops, op]) for s, ops in src.host],
                         _conv_beta(src.beta, w, b, node.stride, node.padding))
    elif node.kind == "add":
        a, c = (_expand(plan, i, memo) for i in node.inputs)
        out = _Expansion(a.spikes + c.spikes, a.host + c.host, a.beta + c.beta)
    elif isinstance(node, HostOp) and node.op == "concat":
        if node.attrs.get("axis") != 0:
            raise UnsupportedLayerError(f"plan node '{name}': a concat along axis {node.attrs.get('axis')} cannot "
                                        "be routed on a chip (only channel concatenation)")
        spikes, host, betas, offset = [], [], [], 0
        total = node.shape[0]
        for i in node.inputs:
            part = _expand(plan, i, memo)
            rows = plan.node(i).shape[0]
            place = _placement(rows, offset, total, name)
            spikes += [(s, [*ops, place]) for s, ops in part.spikes]
            host += [(s, [*ops, place]) for s, ops in part.host]
            betas.append(part.beta)
            offset += rows
        out = _Expansion(spikes, host, np.concatenate(betas, axis=0))
    else:
        raise UnsupportedLayerError(f"plan node '{name}' of kind {node.kind!r} cannot be expanded into chip synapses")
    memo[name] = out
    return out


def _merge_terms(layer: str, terms: list[SpikeTerm]) -> list[SpikeTerm]:
    """One term per source: two paths from the same neurons into the same layer sum their kernels (a 1x1 kernel is
    the centre of a same-geometry k x k one); other pairs have no single synapse per neuron pair."""
    by_src: dict[str, SpikeTerm] = {}
    for t in terms:
        if t.source not in by_src:
            by_src[t.source] = t
            continue
        a = by_src[t.source]
        big, small = (a, t) if a.kernel >= t.kernel else (t, a)
        same = small.kernel == big.kernel and small.stride == big.stride and small.padding == big.padding
        centred = (small.kernel == 1 and small.stride == big.stride == 1 and small.padding == 0
                   and big.padding * 2 == big.kernel - 1)
        if not (same or centred):
            raise UnsupportedLayerError(f"chip layer '{layer}' reads '{t.source}' through two paths of different "
                                        "geometry; they cannot share one synapse per neuron pair")
        w = big.weight.copy()
        c = big.kernel // 2
        if same:
            w += small.weight
        else:
            w[:, :, c:c + 1, c:c + 1] += small.weight
        by_src[t.source] = SpikeTerm(a.source, a.on_chip, a.in_shape, w, big.stride, big.padding, a.path + t.path)
    return list(by_src.values())


def derive_network(plan: Plan, on_chip: Iterable[str]) -> ChipNetwork:
    """The chip network of ``plan`` when the neurons named in ``on_chip`` are on the chip (the rest on the host).

    ``plan`` must carry its arrays. Raises :class:`UnsupportedLayerError` for a path with no exact one-synapse form.
    """
    chip = set(on_chip)
    if not plan.params:
        raise UnsupportedLayerError("the chip mapping needs the plan's weights (lower the model with its params)")
    memo: dict[str, _Expansion] = {}
    layers: list[ChipLayer] = []
    host_neurons = []
    for node in plan.nodes:
        if not isinstance(node, Neuron):
            continue
        if node.name not in chip:
            host_neurons.append(node.name)
            continue
        if len(node.shape) != 3:
            raise UnsupportedLayerError(f"neuron '{node.name}' has shape {node.shape}; chip layers are (C, H, W) maps")
        exp = _expand(plan, node.inputs[0], memo)
        terms = []
        for src, ops in exp.spikes:
            where = f"chip layer '{node.name}'"
            w, stride, pad = _compose(ops, where)
            sshape = plan.node(src).shape
            if w.shape[0] != node.shape[0] or w.shape[1] != sshape[0]:
                raise UnsupportedLayerError(f"{where}: composed path from '{src}' has weight {w.shape} for "
                                            f"{sshape} -> {node.shape}")
            terms.append(SpikeTerm(src, src in chip, tuple(sshape), w, stride, pad, tuple(o.name for o in ops)))
        host = tuple(HostTerm(src, tuple(ops)) for src, ops in exp.host)
        beta = np.broadcast_to(exp.beta, node.shape).astype(np.float64) if exp.beta.shape != node.shape else exp.beta
        layers.append(ChipLayer(node.name, tuple(node.shape), float(node.tau), float(node.v_threshold),
                                tuple(_merge_terms(node.name, terms)), host, np.ascontiguousarray(beta)))
    if not layers:
        raise UnsupportedLayerError("the bundle puts no neuron layer on the neuromorphic side; nothing to map")
    return ChipNetwork(plan, tuple(layers), tuple(host_neurons))
