"""Partitioning an SVFormer into netx chains (Lava-side) and host operations.

A netx network is a *chain*: spikes in -> (synapse + CUBA neuron) -> ... -> spikes out, one input, no residual
join, no product of two signals, no per-timestep weights. In SVFormer a neuron layer can run on Loihi exactly
when its input is a linear function (conv / token-wise Linear / BatchNorm, no neuron between them) of **one**
spike tensor. Those are:

* ``blocks{s}.{i}.mlp``: ``mlp.lif1`` spikes -> fc1 (+ bn1 folded) -> ``mlp.lif2``  (every block; token
  Linears are 1x1 convolutions on the (C, H, W) token map of one frame);
* ``blocks{s}.{i}.attn.{q,k,v}``: ``attn.lif_in`` spikes -> rows of qkv (+ bn_qkv) -> ``lif_q`` / ``lif_k`` /
  ``lif_v`` (three partitions: each PLIF has its own tau and netx has one decay per layer);
* ``patch_embed{s}>...`` (s = 2, 3, 4): ``patch_embed{s}.lif`` spikes -> conv (+ bn) -> the first neuron that
  reads the new stage's stream before any residual add (``blocks{s}.0.lif`` or ``blocks{s}.0.attn.lif_in``);
* ``local_path``: a two-layer chain ``patch_embed3.lif`` spikes -> patch_embed3 conv (+ bn) -> ``local_path.lif``
  -> (depthwise 3x3 s2 composed with the 1x1 conv into one dense 3x3 s2 conv, + bn) -> ``head.lif``
  restricted to its first C4 channels (the concat puts the local path there, and a PLIF is elementwise).

Every other neuron reads a residual stream (a sum of branches), the attention product or analog frames: it runs
on the host, in float, as do the residual adds, the attention product, the concatenation, the temporal Conv3d
head and the classifier. BatchNorm folds only when it is shared across time (``bn="shared"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor, nn

from svformer_deploy.errors import UnsupportedLayerError
from svformer_deploy.exporters.fold import compose_dw_pw, fold_bn, plif_tau, synapse_params
from svformer_deploy.exporters.lava.quantize import FloatLayer, LoihiLayer, quantize_layer
from svformer_deploy.models.neurons import NeuronLayout, SpikingNeuron
from svformer_deploy.models.norm import TemporalBatchNorm
from svformer_deploy.models.recording import from_chw, to_chw

__all__ = ["Tap", "Partition", "partition_model", "quantize_partition", "check_supported", "neuron_assignment",
           "partition_taps"]

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
    from svformer_deploy.exporters.partition import check_supported as check_structure

    check_structure(model)
    for name, m in model.named_modules():
        if isinstance(m, TemporalBatchNorm) and m.mode != "shared" and not approximate_bn:
            raise UnsupportedLayerError(
                f"{name} (TemporalBatchNorm, mode='per_timestep'): netx weights are the same at every timestep, "
                "so per-timestep BatchNorm cannot be folded into them; export a model trained with bn='shared' (or pass "
                "--approximate-bn to fold its time average, at an accuracy cost that verify reports)")


# ------------------------------------------------------------------------------------------- folding

def _fold_bn(w: np.ndarray, b: np.ndarray, bn: TemporalBatchNorm, rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~svformer_deploy.exporters.fold.fold_bn`; a per-timestep BatchNorm (only reached with
    ``approximate_bn``, see :func:`check_supported`) contributes its time-averaged scale and shift."""
    return fold_bn(w, b, bn, approximate=True, rows=rows)


def _layer(name: str, neuron: nn.Module, neuron_name: str, w, b, stride, pad, groups, in_shape, sources) -> FloatLayer:
    return FloatLayer(name=name, neuron=neuron_name, weight=w, bias=b, stride=tuple(stride), padding=tuple(pad),
                      groups=groups, tau=plif_tau(neuron), v_threshold=neuron.v_threshold, in_shape=tuple(in_shape),
                      sources=tuple(sources))


# ------------------------------------------------------------------------------------------- partitioning

def partition_model(model: nn.Module, approximate_bn: bool = False) -> list[Partition]:
    """The netx chains of an SVFormer (see the module docstring), as float layers with BatchNorm folded."""
    check_supported(model, approximate_bn)
    cfg = model.config
    dims, depths = cfg.embed_dims, cfg.depths
    side = [cfg.img_size // 4, cfg.img_size // 8, cfg.img_size // 16, cfg.img_size // 32]
    mods = dict(model.named_modules())
    parts: list[Partition] = []

    def tap(neuron: str, shape: tuple[int, int, int], channels: tuple[int, int] | None = None) -> Tap:
        return Tap(neuron, mods[neuron].layout, tuple(shape), channels)

    def first_reader(s: int) -> list[str]:
        """Neurons that read stage s's stream right after patch_embed{s}, before any residual add."""
        if depths[s - 1] > 0:
            return [f"blocks{s}.0.lif" if s <= 2 else f"blocks{s}.0.attn.lif_in"]
        if s < 4:
            return [f"patch_embed{s + 1}.lif"]
        return []  # stage 4 with no blocks feeds head.lif's second half through the concat: host

    # patch_embed{s} -> first reader of stage s
    for s in (2, 3, 4):
        pe = f"patch_embed{s}"
        src = tap(f"{pe}.lif", (dims[s - 2], side[s - 2], side[s - 2]))
        w, b, st, pd, g = synapse_params(mods[f"{pe}.conv"])
        w, b = _fold_bn(w, b, mods[f"{pe}.bn"])
        for reader in first_reader(s):
            lay = _layer(f"{pe}.conv+bn", mods[reader], reader, w, b, st, pd, g, src.shape, (f"{pe}.conv", f"{pe}.bn"))
            parts.append(Partition(f"{pe}>{reader}", src, (lay,), (tap(reader, lay.out_shape),)))
        if s == 3:  # the local pathway: a two-layer chain ending in head.lif's first C4 channels
            lif_lp = mods["local_path.lif"]
            l1 = _layer(f"{pe}.conv+bn", lif_lp, "local_path.lif", w, b, st, pd, g, src.shape, (f"{pe}.conv", f"{pe}.bn"))
            wc, bc, st2, pd2 = compose_dw_pw(mods["local_path.dwconv"], mods["local_path.pwconv"])
            wc, bc = _fold_bn(wc, bc, mods["local_path.bn"])
            l2 = _layer("local_path.dwconv*pwconv+bn", mods["head.lif"], "head.lif", wc, bc, st2, pd2, 1, l1.out_shape,
                        ("local_path.dwconv", "local_path.pwconv", "local_path.bn"))
            parts.append(Partition("local_path", src, (l1, l2),
                                   (tap("local_path.lif", l1.out_shape),
                                    tap("head.lif", l2.out_shape, (0, l2.out_shape[0])))))

    for s in range(1, 5):
        C, H = dims[s - 1], side[s - 1]
        for i in range(depths[s - 1]):
            blk = f"blocks{s}.{i}"
            if s >= 3:  # attention: q, k, v
                src = tap(f"{blk}.attn.lif_in", (C, H, H))
                w, b, st, pd, g = synapse_params(mods[f"{blk}.attn.qkv"])
                for j, which in enumerate("qkv"):
                    rows = slice(j * C, (j + 1) * C)
                    wj, bj = _fold_bn(w[rows], b[rows], mods[f"{blk}.attn.bn_qkv"], rows)
                    neuron = f"{blk}.attn.lif_{which}"
                    lay = _layer(f"{blk}.attn.qkv[{which}]+bn_qkv", mods[neuron], neuron, wj, bj, st, pd, g, src.shape,
                                 (f"{blk}.attn.qkv", f"{blk}.attn.bn_qkv"))
                    parts.append(Partition(f"{blk}.attn.{which}", src, (lay,), (tap(neuron, lay.out_shape),)))
            src = tap(f"{blk}.mlp.lif1", (C, H, H))
            w, b, st, pd, g = synapse_params(mods[f"{blk}.mlp.fc1"])
            w, b = _fold_bn(w, b, mods[f"{blk}.mlp.bn1"])
            neuron = f"{blk}.mlp.lif2"
            lay = _layer(f"{blk}.mlp.fc1+bn1", mods[neuron], neuron, w, b, st, pd, g, src.shape,
                         (f"{blk}.mlp.fc1", f"{blk}.mlp.bn1"))
            parts.append(Partition(f"{blk}.mlp", src, (lay,), (tap(neuron, lay.out_shape),)))
    return parts


def quantize_partition(part: Partition, exponent: int | None = None) -> Partition:
    """The same partition with every layer quantised (:func:`quantize_layer`)."""
    return Partition(part.name, part.source, tuple(quantize_layer(l, exponent) for l in part.layers), part.taps)


def partition_taps(parts: list[Partition]) -> dict[str, dict]:
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
