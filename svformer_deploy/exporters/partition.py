"""Lower a whole SVFormer into neuromorphic partitions (NIR node graphs) and declared host operations.

The lowering walks the model's fixed structure (it does not trace), checks the exact type of every module on
the way, and produces a :class:`Lowered` model in which every leaf module and every functional operation of
``SVFormer.forward`` (residual adds, the channel concat) is accounted for exactly once:

* in a **partition** -- a per-timestep graph of ``nir.Conv2d`` and ``nir.LIF`` nodes whose residual streams
  are summed edges (several edges into one node are summed, ``Output`` nodes included); or
* in a **host operation** -- what NIR cannot say: the spiking attention product ``Q (K^T V) * scale``
  (a product of two signals), the concat of local pathway and stage 4, and the temporal head (a grouped
  Conv3d spanning all T timesteps, its BatchNorm3d, and the classifier), which runs once per clip.

Mapping rules (each exact in real arithmetic; float rounding differs only in summation order):

* BatchNorm (eval, ``bn="shared"``) is folded into the preceding conv/linear:
  ``W' = W * s[:, None...]``, ``b' = b * s + t`` with ``s = gamma / sqrt(var + eps)``, ``t = beta - mean * s``.
  Per-timestep BN is refused unless ``approximate_bn``: then the time average of (s, t) is folded.
* Token-wise ``nn.Linear`` on the N = H*W tokens of a frame is a 1x1 ``Conv2d`` on the (C, H, W) map (same
  dot products). The fused ``qkv`` Linear becomes three 1x1 convs (rows [0, C), [C, 2C), [2C, 3C)), one per
  PLIF (``lif_q``, ``lif_k``, ``lif_v`` have their own tau).
* Depthwise convs are expanded to dense block-diagonal kernels (``W[c, c] = w_dw[c]``, zero elsewhere):
  nir 1.0.8's type inference mis-reads ``groups > 1``; the expansion is exact.
* PLIF (``H = V + (X - V)/tau``, spike ``H >= V_th``, hard reset to 0) is ``nir.LIF`` with
  ``tau = tau_plif * dt``, ``r = 1``, ``v_leak = 0``, ``v_threshold = V_th``, ``v_reset = 0`` (one value per
  neuron): its forward-Euler step with step ``dt`` is exactly the PLIF charge equation. NIR fires on
  ``v > v_threshold`` (strict), PLIF on ``H >= V_th``: they differ only when H equals V_th exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from svformer_deploy.errors import ExportError, UnsupportedLayerError
from svformer_deploy.exporters.fold import PerTimestepBNError, dense_from_depthwise, fold_bn, plif_tau, synapse_params
from svformer_deploy.exporters.bundle import Approximation, HostOpSpec, PartitionSpec, Signal

__all__ = ["DT", "Lowered", "LoweredPartition", "lower_svformer", "model_operations", "check_supported",
           "PerTimestepBNError", "nir_approximations"]

DT = 1e-4
"""The timestep dt written into every LIF (``tau_nir = tau_plif * dt``); 1e-4 s is what snntorch's importer
hard-codes, so its discretisation of the exported ODE is the PLIF update."""


@dataclass
class LoweredPartition:
    """A partition under construction: NIR nodes, edges, its signal bindings and the modules it covers."""

    name: str
    nodes: dict = field(default_factory=dict)
    edges: list = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)    # Input node name -> signal
    outputs: dict[str, str] = field(default_factory=dict)   # Output node name -> signal
    modules: list[str] = field(default_factory=list)
    node_modules: dict[str, list[str]] = field(default_factory=dict)

    def spec(self, file: str) -> PartitionSpec:
        return PartitionSpec(self.name, file, dict(self.inputs), dict(self.outputs), list(self.modules),
                             {k: list(v) for k, v in self.node_modules.items()})

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


@dataclass(frozen=True)
class _Val:
    """A value during lowering: the sum of the outputs of ``terms`` (node names) in partition ``part``, or a
    named signal (``signal``) produced by a host op or an Input node."""

    part: int
    terms: tuple[str, ...]
    shape: tuple[int, ...]
    signal: str | None = None


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy().copy()


class _Builder:
    def __init__(self) -> None:
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
        part.nodes[out_node] = _nir().Output(output_type={"output": np.array(v.shape)})
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
            self.parts[self.cur].nodes[node] = _nir().Input(input_type={"input": np.array(v.shape)})
            self.parts[self.cur].inputs[node] = sig
            self._imported[key] = node
        return _Val(self.cur, (self._imported[key],), v.shape)

    def add(self, a: _Val, b: _Val, name: str, op: str) -> _Val:
        """Residual add: the union of edge sets (summed by the consumer), in PyTorch's summation order."""
        a, b = self.here(a, f"{name}.lhs"), self.here(b, f"{name}.rhs")
        self.parts[self.cur].modules.append(op)
        return _Val(self.cur, a.terms + b.terms, a.shape)

    # --- nodes
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


# ---------------------------------------------------------------------------------------------- rules


def _f32(a: np.ndarray) -> np.ndarray:
    """Round a float64 weight array once to float32 (contiguous)."""
    return np.ascontiguousarray(a, dtype=np.float32)


def _conv_out(h: int, k: int, s: int, p: int) -> int:
    return (h + 2 * p - k) // s + 1


def _conv_node(weight: np.ndarray, bias: np.ndarray, stride: int, padding: int, in_hw: tuple[int, int]):
    nir = _nir()
    return nir.Conv2d(input_shape=tuple(int(v) for v in in_hw), weight=weight, stride=(stride, stride),
                      padding=(padding, padding), dilation=(1, 1), groups=1, bias=bias)


def _lif_node(tau_plif: float, v_th: float, shape: tuple[int, ...]):
    nir = _nir()
    return nir.LIF(tau=np.full(shape, tau_plif * DT, dtype=np.float64), r=np.ones(shape, dtype=np.float64),
                   v_leak=np.zeros(shape, dtype=np.float64), v_threshold=np.full(shape, v_th, dtype=np.float64),
                   v_reset=np.zeros(shape, dtype=np.float64))


# ---------------------------------------------------------------------------------------------- structure


@dataclass(frozen=True)
class _ListOf:
    """An ``nn.ModuleList`` whose every element is exactly of type ``item``."""

    item: type


def structure_table() -> dict[type, dict[str, type | _ListOf]]:
    """The export rules' view of the model, keyed by module type: for every type a rule exists for, the exact
    type of each child it lowers (leaf types map to no children). ``PatchEmbed.lif`` may be absent (the stem
    sees analog frames). A module of another type, or a child the table does not list, has no rule."""
    from svformer_deploy.models import svformer as S
    from svformer_deploy.models.neurons import PLIF
    from svformer_deploy.models.norm import TemporalBatchNorm as TBN

    return {
        S.SVFormer: {"patch_embed1": S.PatchEmbed, "blocks1": _ListOf(S.CBlock), "patch_embed2": S.PatchEmbed,
                     "blocks2": _ListOf(S.CBlock), "patch_embed3": S.PatchEmbed, "local_path": S.LocalPath,
                     "blocks3": _ListOf(S.SABlock), "patch_embed4": S.PatchEmbed, "blocks4": _ListOf(S.SABlock),
                     "head": S.TemporalHead},
        S.PatchEmbed: {"lif": PLIF, "conv": S.TConv2d, "bn": TBN},
        S.CBlock: {"lif": PLIF, "conv1": S.TConv2d, "dwconv": S.TConv2d, "conv2": S.TConv2d, "bn": TBN,
                   "mlp": S.ConvMlp, "drop_path": S.DropPath},
        S.ConvMlp: {"lif1": PLIF, "fc1": S.TConv2d, "bn1": TBN, "lif2": PLIF, "fc2": S.TConv2d, "bn2": TBN},
        S.SABlock: {"attn": S.SpikeAttention, "mlp": S.TokenMlp, "drop_path": S.DropPath},
        S.SpikeAttention: {"lif_in": PLIF, "qkv": nn.Linear, "bn_qkv": TBN, "lif_q": PLIF, "lif_k": PLIF,
                           "lif_v": PLIF, "product": S.SpikeAttentionProduct, "lif_proj": PLIF, "proj": nn.Linear,
                           "bn_proj": TBN},
        S.TokenMlp: {"lif1": PLIF, "fc1": nn.Linear, "bn1": TBN, "lif2": PLIF, "fc2": nn.Linear, "bn2": TBN},
        S.LocalPath: {"lif": PLIF, "dwconv": S.TConv2d, "pwconv": S.TConv2d, "bn": TBN},
        S.TemporalHead: {"lif": PLIF, "conv3d": nn.Conv3d, "bn": nn.BatchNorm3d, "fc": nn.Linear},
        **{leaf: {} for leaf in (PLIF, S.TConv2d, nn.Linear, TBN, S.DropPath, S.SpikeAttentionProduct, nn.Conv3d,
                                 nn.BatchNorm3d)},
    }


_OPTIONAL_CHILDREN = {("PatchEmbed", "lif")}


def check_supported(model: nn.Module) -> None:
    """Raise :class:`UnsupportedLayerError` for the first module the export rules do not cover.

    Walks the model from the root with :func:`structure_table`: every module must be exactly of the type its
    parent's rule expects at that attribute (a subclass may change ``forward``, so it is refused too), and have
    no child the rule does not know. ``neuron="relu"`` (the ANN twin) is refused: it has no spikes.
    """
    from svformer_deploy.models.svformer import DropPath, SVFormer

    table = structure_table()

    def refuse(name: str, module: nn.Module, want: type | None) -> UnsupportedLayerError:
        what = f"expected {want.__module__}.{want.__qualname__}" if want is not None else "no export rule"
        return UnsupportedLayerError(
            f"module '{name or '<root>'}' of type {type(module).__module__}.{type(module).__qualname__} is not "
            f"supported by the exporter ({what} at this position); export an unmodified SVFormer from "
            "create_model(), or add a lowering rule in svformer_deploy/exporters/partition.py")

    def walk(name: str, module: nn.Module, want: type | _ListOf | None) -> None:
        if isinstance(want, _ListOf):
            if type(module) is not nn.ModuleList:
                raise refuse(name, module, nn.ModuleList)
            for i, child in module.named_children():
                walk(f"{name}.{i}", child, want.item)
            return
        if want is None or type(module) is not want:
            raise refuse(name, module, want)
        if want is DropPath and module.training and module.p > 0:
            raise UnsupportedLayerError(f"module '{name}' (DropPath) is in training mode; call model.eval() first")
        kids = table[want]
        present = dict(module.named_children())
        for child_name, child in present.items():
            walk(f"{name}.{child_name}" if name else child_name, child, kids.get(child_name))
        for child_name in kids:
            if child_name not in present and (want.__name__, child_name) not in _OPTIONAL_CHILDREN:
                raise UnsupportedLayerError(f"module '{name}' has no '{child_name}', which its export rule needs; "
                                            "export an unmodified SVFormer from create_model()")

    walk("", model, SVFormer)


def model_operations(model: nn.Module) -> list[str]:
    """Every operation of ``SVFormer.forward`` the export must account for: leaf modules (dotted names) and the
    functional operations written in the blocks' forward (``<block>:add1``, ``<block>:add2``,
    ``forward_features:cat``)."""
    ops = [n for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    for stage in ("blocks1", "blocks2", "blocks3", "blocks4"):
        for i in range(len(getattr(model, stage))):
            ops += [f"{stage}.{i}:add1", f"{stage}.{i}:add2"]
    return ops + ["forward_features:cat"]


# ---------------------------------------------------------------------------------------------- lowering


def lower_svformer(model: nn.Module, approximate_bn: bool = False) -> Lowered:
    """Lower an eval-mode SVFormer (see the module docstring for the rules)."""
    check_supported(model)
    cfg = model.config
    if cfg.bn == "per_timestep" and not approximate_bn:
        raise PerTimestepBNError(
            f"model '{cfg.name}' uses per-timestep BatchNorm (its own statistics for each of the T={cfg.num_frames} "
            "timesteps), which cannot be folded into a time-invariant NIR graph; train it with bn='shared' "
            "(create_model(..., bn='shared') / `train --bn shared`), or pass --approximate-bn to fold the time-averaged "
            "BatchNorm (verification then reports the accuracy and spike-agreement cost on real clips)")
    from svformer_deploy.models import svformer as S

    model = model.eval()
    b = _Builder()
    ap = approximate_bn
    C_in, _, H, W = cfg.input_shape
    b.signals["frames"] = Signal("frames", (C_in, H, W), "analog")
    frames = _Val(-1, (), (C_in, H, W), "frames")

    def lif(name: str, mod: nn.Module, x: _Val) -> _Val:
        return b.node(name, _lif_node(plif_tau(mod), mod.v_threshold, x.shape), x, [name], x.shape)

    def conv(name: str, mods: list[str], w: np.ndarray, bias: np.ndarray, x: _Val, k: int, s: int, p: int) -> _Val:
        c, h, wd = x.shape
        out = (w.shape[0], _conv_out(h, k, s, p), _conv_out(wd, k, s, p))
        return b.node(name, _conv_node(w, bias, s, p, (h, wd)), x, mods, out)

    def tconv(name: str, m: nn.Conv2d, bn: nn.Module | None, bn_name: str | None, x: _Val) -> _Val:
        w, bias, stride, pad, groups = synapse_params(m)
        if groups != 1:
            if groups != m.in_channels or m.out_channels != m.in_channels:
                raise UnsupportedLayerError(f"module '{name}' is a grouped conv (groups={m.groups}) that is neither "
                                            "dense nor depthwise; no lowering rule")
            w = dense_from_depthwise(w)
        w, bias = fold_bn(w, bias, bn, ap)
        mods = [name] + ([bn_name] if bn_name else [])
        return conv(name, mods, _f32(w), _f32(bias), x, m.kernel_size[0], stride[0], pad[0])

    def token_linear(name: str, m: nn.Linear, bn: nn.Module | None, bn_name: str | None, x: _Val,
                     rows: slice | None = None, node_name: str | None = None, mods: list[str] | None = None) -> _Val:
        w64, b64, _, _, _ = synapse_params(m)  # (O, I, 1, 1): the 1x1 conv on the token map
        w64, b64 = fold_bn(w64, b64, bn, ap)
        if rows is not None:
            w64, b64 = w64[rows], b64[rows]
        return conv(node_name or name, mods if mods is not None else [name] + ([bn_name] if bn_name else []),
                    _f32(w64), _f32(b64), x, 1, 1, 0)

    def mlp(pfx: str, m, x: _Val, lower_linear) -> _Val:
        """BN(fc2(PLIF(BN(fc1(PLIF(x)))))) with ``lower_linear`` = tconv (ConvMlp) or token_linear (TokenMlp)."""
        y = lif(f"{pfx}.lif1", m.lif1, x)
        y = lower_linear(f"{pfx}.fc1", m.fc1, m.bn1, f"{pfx}.bn1", y)
        y = lif(f"{pfx}.lif2", m.lif2, y)
        return lower_linear(f"{pfx}.fc2", m.fc2, m.bn2, f"{pfx}.bn2", y)

    def cblock(pfx: str, blk, x: _Val) -> _Val:
        """x += BN(conv2(dwconv(conv1(PLIF(x))))); x += mlp(x)."""
        s = lif(f"{pfx}.lif", blk.lif, x)
        y = tconv(f"{pfx}.conv1", blk.conv1, None, None, s)
        y = tconv(f"{pfx}.dwconv", blk.dwconv, None, None, y)
        y = tconv(f"{pfx}.conv2", blk.conv2, blk.bn, f"{pfx}.bn", y)
        b.parts[b.cur].modules.append(f"{pfx}.drop_path")
        x = b.add(x, y, f"{pfx}.res1", f"{pfx}:add1")
        return b.add(x, lower(f"{pfx}.mlp", blk.mlp, x), f"{pfx}.res2", f"{pfx}:add2")

    def patch_embed(pfx: str, pe, x: _Val) -> _Val:
        """BN(conv(PLIF(x))); the stem (no neuron) reads the analog frames."""
        s = x if pe.lif is None else lif(f"{pfx}.lif", pe.lif, x)
        return tconv(f"{pfx}.conv", pe.conv, pe.bn, f"{pfx}.bn", s)

    def local_path(pfx: str, lp, x: _Val) -> _Val:
        """BN(pwconv(dwconv(PLIF(x))))."""
        y = lif(f"{pfx}.lif", lp.lif, x)
        y = tconv(f"{pfx}.dwconv", lp.dwconv, None, None, y)
        return tconv(f"{pfx}.pwconv", lp.pwconv, lp.bn, f"{pfx}.bn", y)

    def sablock(pfx: str, blk, x: _Val) -> _Val:
        """x += BN(proj(PLIF(Q (K^T V) * scale))) with Q, K, V = PLIF(BN(qkv(PLIF(x)))); x += mlp(x)."""
        a = blk.attn
        C, h, w = x.shape
        s = lif(f"{pfx}.attn.lif_in", a.lif_in, x)
        qkv = []
        for j, which in enumerate("qkv"):
            mods = [f"{pfx}.attn.qkv", f"{pfx}.attn.bn_qkv"] if j == 0 else []
            y = token_linear(f"{pfx}.attn.qkv", a.qkv, a.bn_qkv, None, s, rows=slice(j * C, (j + 1) * C),
                             node_name=f"{pfx}.attn.qkv.{which}", mods=mods)
            b.parts[b.cur].node_modules[f"{pfx}.attn.qkv.{which}"] = [f"{pfx}.attn.qkv", f"{pfx}.attn.bn_qkv"]
            spk = lif(f"{pfx}.attn.lif_{which}", getattr(a, f"lif_{which}"), y)
            qkv.append(b.signal_of(spk, f"{pfx}.attn.{which}", "spikes"))
        heads = a.num_heads
        out = Signal(f"{pfx}.attn.product", (C, h, w), "analog")
        (att,) = b.host(HostOpSpec(
            name=f"{pfx}.attn.product", op="spike_attention_product", inputs=qkv, outputs=[out.name],
            modules=[f"{pfx}.attn.product"],
            equation="per head j (channels j*d..(j+1)*d-1 of a (C,H,W) map = N=H*W tokens of dim d): "
                     "A_j = Q_j (K_j^T V_j) * scale, with Q_j, K_j, V_j (N, d); output channel j*d+i",
            attrs={"num_heads": heads, "head_dim": C // heads, "scale": float(a.product.scale)}), [out], {})
        y = lif(f"{pfx}.attn.lif_proj", a.lif_proj, att)
        y = token_linear(f"{pfx}.attn.proj", a.proj, a.bn_proj, f"{pfx}.attn.bn_proj", y)
        b.parts[b.cur].modules.append(f"{pfx}.drop_path")
        x = b.add(x, y, f"{pfx}.res1", f"{pfx}:add1")
        return b.add(x, lower(f"{pfx}.mlp", blk.mlp, x), f"{pfx}.res2", f"{pfx}:add2")

    def stage(pfx: str, blocks: nn.ModuleList, x: _Val) -> _Val:
        for i, blk in enumerate(blocks):
            x = lower(f"{pfx}.{i}", blk, x)
        return x

    # the lowering table, keyed by module type (check_supported has verified every type and child)
    rules = {S.PatchEmbed: patch_embed, S.CBlock: cblock, S.SABlock: sablock, S.LocalPath: local_path,
             S.ConvMlp: lambda pfx, m, x: mlp(pfx, m, x, tconv),
             S.TokenMlp: lambda pfx, m, x: mlp(pfx, m, x, token_linear), nn.ModuleList: stage}

    def lower(pfx: str, module: nn.Module, x: _Val) -> _Val:
        return rules[type(module)](pfx, module, x)

    # SVFormer.forward_features: stages in order; the local path forks from the stage-3 input
    x = frames
    for name in ("patch_embed1", "blocks1", "patch_embed2", "blocks2", "patch_embed3"):
        x = lower(name, getattr(model, name), x)
    local_sig = b.signal_of(lower("local_path", model.local_path, x), "local_path", "analog")
    for name in ("blocks3", "patch_embed4", "blocks4"):
        x = lower(name, getattr(model, name), x)
    stage4 = b.signal_of(x, "stage4", "analog")

    C4, hh, ww = x.shape
    feats = Signal("features", (2 * C4, hh, ww), "analog")
    (f,) = b.host(HostOpSpec(
        name="forward_features.cat", op="concat", inputs=[local_sig, stage4], outputs=["features"],
        modules=["forward_features:cat"], equation="features = concat(local_path, stage4) along channels",
        attrs={"axis": 0}), [feats], {})
    spk = lif("head.lif", model.head.lif, f)
    head_sig = b.signal_of(spk, "head.spikes", "spikes")

    hd = model.head
    w3, b3 = fold_bn(hd.conv3d.weight.detach().double().numpy(), hd.conv3d.bias.detach().double().numpy(), hd.bn)
    w3, b3 = _f32(w3), _f32(b3)
    logits = Signal("logits", (cfg.num_classes,), "logits", time="per_clip", layout="K")
    b.host(HostOpSpec(
        name="head.readout", op="temporal_head", inputs=[head_sig], outputs=["logits"],
        modules=["head.conv3d", "head.bn", "head.fc"],
        equation="z[b, o] = sum_{t, i in group(o), y, x} W3[o, i, t, y, x] s[t, b, g(o)*Cg + i, y, x] + b3[o] "
                 "(grouped Conv3d spanning all T timesteps, BatchNorm3d folded in); logits = W_fc z + b_fc",
        attrs={"groups": int(hd.conv3d.groups), "num_steps": cfg.num_frames},
        params=["head.readout.conv3d_weight", "head.readout.conv3d_bias", "head.readout.fc_weight",
                "head.readout.fc_bias"], time="per_clip"),
        [logits],
        {"head.readout.conv3d_weight": w3, "head.readout.conv3d_bias": b3,
         "head.readout.fc_weight": _np(hd.fc.weight), "head.readout.fc_bias": _np(hd.fc.bias)})
    b.finish()
    return Lowered(b.parts, b.host_ops, b.host_params, b.signals, b.schedule, "frames", "logits",
                   nir_approximations(cfg.to_dict()))


def nir_approximations(config: dict) -> list[Approximation]:
    """What a NIR export departs from the model by: only the time-averaged BatchNorm of a per-timestep-BN model
    (exported with ``approximate_bn``). The verifier re-derives this list from the source checkpoint's config."""
    if config.get("bn") != "per_timestep":
        return []
    T = int(config["num_frames"])
    return [Approximation("bn_time_average", f"per-timestep BatchNorm folded with its time-averaged affine map (mean "
                          f"over T={T} of scale and shift); not exact", {"num_frames": T})]
