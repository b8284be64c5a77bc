"""SVFormer's lowerings into the export plan (:mod:`svformer_deploy.exporters.plan`), one per module type.

Each rule states the block's forward as plan nodes (exact in real arithmetic):

* ``PatchEmbed``: ``BN(conv(PLIF(x)))``; the stem (no neuron) reads the analog frames.
* ``CBlock``: ``x += BN(conv2(dwconv(conv1(PLIF(x)))))``; ``x += mlp(x)``.
* ``ConvMlp`` / ``TokenMlp``: ``BN(fc2(PLIF(BN(fc1(PLIF(x))))))``; token-wise Linears are 1x1 synapses.
* ``SABlock``: ``x += BN(proj(PLIF(Q (K^T V) * scale)))`` with ``Q, K, V = PLIF(BN(qkv(PLIF(x))))`` (the fused
  qkv Linear becomes three synapses, rows [0, C), [C, 2C), [2C, 3C), one per PLIF); the product is a host op.
* ``LocalPath``: ``BN(pwconv(dwconv(PLIF(x))))``.
* ``SVFormer``: the stages in order, the local path forking from the stage-3 input, the channel concat of
  local path and stage 4 (host op), ``head.lif``, and the temporal head (grouped Conv3d spanning all T
  timesteps, BatchNorm3d folded, classifier: a per-clip host op).
"""

from __future__ import annotations

from torch import nn

from svformer_deploy.exporters.fold import fold_bn
from svformer_deploy.exporters.plan import HostOp, ListOf, Lowering, _np, register_lowering
from svformer_deploy.models import svformer as S
from svformer_deploy.models.neurons import PLIF
from svformer_deploy.models.norm import TemporalBatchNorm as TBN


def _functional(model: nn.Module) -> list[str]:
    """``<block>:add1``, ``<block>:add2`` for every block of every stage, and ``forward_features:cat``."""
    ops = []
    for stage in ("blocks1", "blocks2", "blocks3", "blocks4"):
        for i in range(len(getattr(model, stage))):
            ops += [f"{stage}.{i}:add1", f"{stage}.{i}:add2"]
    return ops + ["forward_features:cat"]


for _leaf in (PLIF, S.TConv2d, nn.Linear, TBN, S.DropPath, S.SpikeAttentionProduct, nn.Conv3d, nn.BatchNorm3d):
    register_lowering(_leaf)(None)  # leaves: lowered by their parent's rule


@register_lowering(S.PatchEmbed, {"lif": PLIF, "conv": S.TConv2d, "bn": TBN}, optional=("lif",))
def patch_embed(ctx: Lowering, pfx: str, pe: nn.Module, x: str) -> str:
    s = x if pe.lif is None else ctx.neuron(f"{pfx}.lif", pe.lif, x)
    return ctx.synapse(f"{pfx}.conv", pe.conv, s, pe.bn, (f"{pfx}.conv", f"{pfx}.bn"))


def _mlp(ctx: Lowering, pfx: str, m: nn.Module, x: str) -> str:
    y = ctx.neuron(f"{pfx}.lif1", m.lif1, x)
    y = ctx.synapse(f"{pfx}.fc1", m.fc1, y, m.bn1, (f"{pfx}.fc1", f"{pfx}.bn1"))
    y = ctx.neuron(f"{pfx}.lif2", m.lif2, y)
    return ctx.synapse(f"{pfx}.fc2", m.fc2, y, m.bn2, (f"{pfx}.fc2", f"{pfx}.bn2"))


_MLP_CHILDREN = {"lif1": PLIF, "bn1": TBN, "lif2": PLIF, "bn2": TBN}
register_lowering(S.ConvMlp, {**_MLP_CHILDREN, "fc1": S.TConv2d, "fc2": S.TConv2d})(_mlp)
register_lowering(S.TokenMlp, {**_MLP_CHILDREN, "fc1": nn.Linear, "fc2": nn.Linear})(_mlp)


def _residuals(ctx: Lowering, pfx: str, blk: nn.Module, x: str, y: str) -> str:
    """``x += y`` (drop_path is the identity in eval); ``x += mlp(x)``."""
    x = ctx.add(f"{pfx}.res1", x, y, (f"{pfx}.drop_path", f"{pfx}:add1"))
    return ctx.add(f"{pfx}.res2", x, ctx.lower(f"{pfx}.mlp", blk.mlp, x), (f"{pfx}:add2",))


@register_lowering(S.CBlock, {"lif": PLIF, "conv1": S.TConv2d, "dwconv": S.TConv2d, "conv2": S.TConv2d, "bn": TBN,
                              "mlp": S.ConvMlp, "drop_path": S.DropPath})
def cblock(ctx: Lowering, pfx: str, blk: nn.Module, x: str) -> str:
    y = ctx.neuron(f"{pfx}.lif", blk.lif, x)
    y = ctx.synapse(f"{pfx}.conv1", blk.conv1, y)
    y = ctx.synapse(f"{pfx}.dwconv", blk.dwconv, y)
    y = ctx.synapse(f"{pfx}.conv2", blk.conv2, y, blk.bn, (f"{pfx}.conv2", f"{pfx}.bn"))
    return _residuals(ctx, pfx, blk, x, y)


register_lowering(S.SpikeAttention, {"lif_in": PLIF, "qkv": nn.Linear, "bn_qkv": TBN, "lif_q": PLIF, "lif_k": PLIF,
                                     "lif_v": PLIF, "product": S.SpikeAttentionProduct, "lif_proj": PLIF,
                                     "proj": nn.Linear, "bn_proj": TBN})(None)  # lowered by SABlock's rule


@register_lowering(S.SABlock, {"attn": S.SpikeAttention, "mlp": S.TokenMlp, "drop_path": S.DropPath})
def sablock(ctx: Lowering, pfx: str, blk: nn.Module, x: str) -> str:
    a, ap = blk.attn, f"{pfx}.attn"
    C, h, w = ctx.shape(x)
    s = ctx.neuron(f"{ap}.lif_in", a.lif_in, x)
    fused = (f"{ap}.qkv", f"{ap}.bn_qkv")
    qkv = []
    for j, which in enumerate("qkv"):
        y = ctx.synapse(f"{ap}.qkv.{which}", a.qkv, s, a.bn_qkv, fused if j == 0 else (),
                        rows=slice(j * C, (j + 1) * C), shares=() if j == 0 else fused)
        qkv.append(ctx.neuron(f"{ap}.lif_{which}", getattr(a, f"lif_{which}"), y))
    att = ctx.host(HostOp(
        f"{ap}.product", tuple(qkv), (C, h, w), (f"{ap}.product",), op="spike_attention_product",
        equation="per head j (channels j*d..(j+1)*d-1 of a (C,H,W) map = N=H*W tokens of dim d): "
                 "A_j = Q_j (K_j^T V_j) * scale, with Q_j, K_j, V_j (N, d); output channel j*d+i",
        attrs={"num_heads": a.num_heads, "head_dim": C // a.num_heads, "scale": float(a.product.scale)}))
    y = ctx.neuron(f"{ap}.lif_proj", a.lif_proj, att)
    y = ctx.synapse(f"{ap}.proj", a.proj, y, a.bn_proj, (f"{ap}.proj", f"{ap}.bn_proj"))
    return _residuals(ctx, pfx, blk, x, y)


@register_lowering(S.LocalPath, {"lif": PLIF, "dwconv": S.TConv2d, "pwconv": S.TConv2d, "bn": TBN})
def local_path(ctx: Lowering, pfx: str, lp: nn.Module, x: str) -> str:
    y = ctx.neuron(f"{pfx}.lif", lp.lif, x)
    y = ctx.synapse(f"{pfx}.dwconv", lp.dwconv, y)
    return ctx.synapse(f"{pfx}.pwconv", lp.pwconv, y, lp.bn, (f"{pfx}.pwconv", f"{pfx}.bn"))


register_lowering(S.TemporalHead, {"lif": PLIF, "conv3d": nn.Conv3d, "bn": nn.BatchNorm3d, "fc": nn.Linear})(None)


@register_lowering(nn.ModuleList)
def stage(ctx: Lowering, pfx: str, blocks: nn.ModuleList, x: str) -> str:
    for i, blk in enumerate(blocks):
        x = ctx.lower(f"{pfx}.{i}", blk, x)
    return x


@register_lowering(S.SVFormer, {
    "patch_embed1": S.PatchEmbed, "blocks1": ListOf(S.CBlock), "patch_embed2": S.PatchEmbed,
    "blocks2": ListOf(S.CBlock), "patch_embed3": S.PatchEmbed, "local_path": S.LocalPath,
    "blocks3": ListOf(S.SABlock), "patch_embed4": S.PatchEmbed, "blocks4": ListOf(S.SABlock),
    "head": S.TemporalHead}, functional=_functional)
def svformer(ctx: Lowering, pfx: str, model: nn.Module, x: str) -> str:
    for name in ("patch_embed1", "blocks1", "patch_embed2", "blocks2", "patch_embed3"):
        x = ctx.lower(name, getattr(model, name), x)
    local = ctx.lower("local_path", model.local_path, x)
    for name in ("blocks3", "patch_embed4", "blocks4"):
        x = ctx.lower(name, getattr(model, name), x)
    C4, hh, ww = ctx.shape(x)
    feats = ctx.host(HostOp("forward_features.cat", (local, x), (2 * C4, hh, ww), ("forward_features:cat",),
                            op="concat", equation="features = concat(local_path, stage4) along channels",
                            attrs={"axis": 0}))
    spk = ctx.neuron("head.lif", model.head.lif, feats)
    hd, cfg = model.head, model.config
    w3, b3 = fold_bn(_np(hd.conv3d.weight), _np(hd.conv3d.bias), hd.bn)
    return ctx.host(HostOp(
        "head.readout", (spk,), (cfg.num_classes,), ("head.conv3d", "head.bn", "head.fc"), op="temporal_head",
        equation="z[b, o] = sum_{t, i in group(o), y, x} W3[o, i, t, y, x] s[t, b, g(o)*Cg + i, y, x] + b3[o] "
                 "(grouped Conv3d spanning all T timesteps, BatchNorm3d folded in); logits = W_fc z + b_fc",
        attrs={"groups": int(hd.conv3d.groups), "num_steps": cfg.num_frames},
        params=("head.readout.conv3d_weight", "head.readout.conv3d_bias", "head.readout.fc_weight",
                "head.readout.fc_bias"), output_kind="logits", output_time="per_clip", layout="K"),
        {"head.readout.conv3d_weight": w3, "head.readout.conv3d_bias": b3,
         "head.readout.fc_weight": _np(hd.fc.weight), "head.readout.fc_bias": _np(hd.fc.bias)})

