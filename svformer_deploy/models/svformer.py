"""SVFormer (Yu et al., 2024): a directly trained spiking video transformer.

Structure, with every neuron a multi-step PLIF and every BN a :class:`TemporalBatchNorm`; tensors are
time-major (T, B, ...) with one video frame per timestep, convolutions and attention act per timestep, and
residual streams carry real values (membrane shortcuts: spikes are never added to spikes)::

    x (B, C, T, H, W) -> (T, B, C, H, W)
    patch_embed1: BN(Conv k6 s4 p1 (x))                                   analog frames in, no neuron
    blocks1/2 (CBlock):  x = x + BN(Conv1x1(DWConv5x5(Conv1x1(PLIF(x)))))
                         x = x + BN(Conv1x1(PLIF(BN(Conv1x1_{C->rC}(PLIF(x))))))
    patch_embed2/3/4:    BN(Conv k4 s2 p1 (PLIF(x)))
    blocks3/4 (SABlock, tokens = H*W of one frame):
                         s = PLIF(x); Q, K, V = PLIF(split(BN(Linear_{C->3C}(s))))      per head, d = head_dim
                         x = x + BN(Linear(PLIF(Q (K^T V) * d^-0.5)))                  no softmax
                         x = x + BN(Linear(PLIF(BN(Linear_{C->rC}(PLIF(x))))))
    local_path (from the stage-3 input): BN(Conv1x1(DWConv3x3 s2 (PLIF(x))))
    head: Linear(BN3d(Conv3d_{k=(T, H/32, W/32), groups=C4}(PLIF(cat(local_path, stage4)))))

Module names are stable (they name layers in spike recordings, energy reports and export bundles).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from svformer_deploy.errors import InputShapeError
from svformer_deploy.models.config import SVFormerConfig
from svformer_deploy.models.neurons import PLIF, NeuronLayout, ReLUNeuron, SpikingNeuron
from svformer_deploy.models.norm import TemporalBatchNorm
from svformer_deploy.models.spike_packing import pack_saved_spikes

__all__ = ["SVFormer", "TConv2d", "CBlock", "SABlock", "SpikeAttention", "SpikeAttentionProduct", "PatchEmbed"]


class TConv2d(nn.Conv2d):
    """A Conv2d applied to every timestep of a (T, B, C, H, W) tensor: ``y[t] = conv(x[t])`` (T folded into batch).

    It *is* an ``nn.Conv2d`` (same parameters and state-dict keys), so tools that handle Conv2d handle it.
    Depthwise convolutions run channels-last on CPU (2-3x faster forward+backward in oneDNN than the
    contiguous layout, conversions included; ``benchmarks/bench_model.py``); the output is contiguous again.
    """

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        x2 = x.flatten(0, 1)
        if self.groups > 1 and self.groups == self.in_channels and x2.device.type == "cpu":
            y = super().forward(x2.contiguous(memory_format=torch.channels_last)).contiguous()
        else:
            y = super().forward(x2)
        return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])


def _neuron(cfg: SVFormerConfig, layout: NeuronLayout = "chw") -> SpikingNeuron:
    if cfg.neuron == "relu":
        return ReLUNeuron(layout)
    return PLIF(tau_init=cfg.tau_init, v_threshold=cfg.v_threshold, alpha=cfg.surrogate_alpha, layout=layout)


def _conv(cin: int, cout: int, k: int, s: int = 1, p: int = 0, groups: int = 1) -> TConv2d:
    return TConv2d(cin, cout, k, s, p, groups=groups)


def _bn(cfg: SVFormerConfig, c: int, channels_last: bool = False) -> TemporalBatchNorm:
    return TemporalBatchNorm(c, cfg.num_frames, cfg.bn, channels_last=channels_last)


class DropPath(nn.Module):
    """Stochastic depth on a residual branch (training only): zero the branch for a random subset of samples.

    The mask is drawn per sample (axis 1 of (T, B, ...)) and shared across timesteps; kept samples are scaled
    by 1 / (1 - p). Identity in eval mode.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((1, x.shape[1]) + (1,) * (x.dim() - 2)).bernoulli_(keep)
        return x * mask / keep


class PatchEmbed(nn.Module):
    """Downsampling ``BN(Conv(PLIF(x)))``; the first one (the stem) has no neuron: it sees analog frames."""

    def __init__(self, cfg: SVFormerConfig, cin: int, cout: int, k: int, s: int, p: int, spiking_input: bool) -> None:
        super().__init__()
        self.lif = _neuron(cfg) if spiking_input else None
        self.conv = _conv(cin, cout, k, s, p)
        self.bn = _bn(cfg, cout)

    def forward(self, x: Tensor) -> Tensor:
        if self.lif is not None:
            x = self.lif(x)
        return self.bn(self.conv(x))


class ConvMlp(nn.Module):
    """``BN(Conv1x1_{rC->C}(PLIF(BN(Conv1x1_{C->rC}(PLIF(x))))))`` on (T, B, C, H, W)."""

    def __init__(self, cfg: SVFormerConfig, dim: int, hidden: int) -> None:
        super().__init__()
        self.lif1, self.fc1, self.bn1 = _neuron(cfg), _conv(dim, hidden, 1), _bn(cfg, hidden)
        self.lif2, self.fc2, self.bn2 = _neuron(cfg), _conv(hidden, dim, 1), _bn(cfg, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn1(self.fc1(self.lif1(x)))
        return self.bn2(self.fc2(self.lif2(x)))


class TokenMlp(nn.Module):
    """``BN(Linear_{rC->C}(PLIF(BN(Linear_{C->rC}(PLIF(x))))))`` on tokens (T, B, N, C)."""

    def __init__(self, cfg: SVFormerConfig, dim: int, hidden: int) -> None:
        super().__init__()
        self.lif1, self.fc1 = _neuron(cfg, "tokens"), nn.Linear(dim, hidden)
        self.bn1 = _bn(cfg, hidden, channels_last=True)
        self.lif2, self.fc2 = _neuron(cfg, "tokens"), nn.Linear(hidden, dim)
        self.bn2 = _bn(cfg, dim, channels_last=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn1(self.fc1(self.lif1(x)))
        return self.bn2(self.fc2(self.lif2(x)))


class CBlock(nn.Module):
    """Local block (stages 1-2): depthwise-separable spatial mixing, then a conv MLP, both residual."""

    def __init__(self, cfg: SVFormerConfig, dim: int, drop_path: float) -> None:
        super().__init__()
        self.lif = _neuron(cfg)
        self.conv1 = _conv(dim, dim, 1)
        self.dwconv = _conv(dim, dim, 5, 1, 2, groups=dim)
        self.conv2 = _conv(dim, dim, 1)
        self.bn = _bn(cfg, dim)
        self.mlp = ConvMlp(cfg, dim, int(dim * cfg.mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.bn(self.drop_path(self.conv2(self.dwconv(self.conv1(self.lif(x))))))
        return x + self.drop_path(self.mlp(x))


class SpikeAttentionProduct(nn.Module):
    """The linear spiking attention product ``Q (K^T V) * scale`` on binary Q, K, V of shape (T, B, h, N, d).

    ``K^T V`` (d x d per head) is computed first, so the cost is linear in the number of tokens N.
    A module of its own so that counters and exporters meet it under a stable name.
    """

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return (q @ (k.transpose(-2, -1) @ v)) * self.scale


class SpikeAttention(nn.Module):
    """Spiking self-attention over the N = H*W tokens of each frame: ``BN(Linear(PLIF(Q (K^T V) * d^-0.5)))``."""

    def __init__(self, cfg: SVFormerConfig, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.lif_in = _neuron(cfg, "tokens")
        self.qkv = nn.Linear(dim, 3 * dim)
        self.bn_qkv = _bn(cfg, 3 * dim, channels_last=True)
        self.lif_q, self.lif_k, self.lif_v = _neuron(cfg, "heads"), _neuron(cfg, "heads"), _neuron(cfg, "heads")
        self.product = SpikeAttentionProduct((dim // num_heads) ** -0.5)
        self.lif_proj = _neuron(cfg, "tokens")
        self.proj = nn.Linear(dim, dim)
        self.bn_proj = _bn(cfg, dim, channels_last=True)

    def forward(self, x: Tensor) -> Tensor:
        T, B, N, C = x.shape
        h = self.num_heads
        qkv = self.bn_qkv(self.qkv(self.lif_in(x)))  # (T, B, N, 3C), features ordered (3, heads, d)
        qkv = qkv.reshape(T, B, N, 3, h, C // h).permute(3, 0, 1, 4, 2, 5)  # (3, T, B, h, N, d)
        q, k, v = self.lif_q(qkv[0]), self.lif_k(qkv[1]), self.lif_v(qkv[2])
        a = self.product(q, k, v).transpose(2, 3).reshape(T, B, N, C)
        return self.bn_proj(self.proj(self.lif_proj(a)))


class SABlock(nn.Module):
    """Global block (stages 3-4): spiking self-attention and a token MLP, both residual, on (T, B, C, H, W)."""

    def __init__(self, cfg: SVFormerConfig, dim: int, num_heads: int, drop_path: float) -> None:
        super().__init__()
        self.attn = SpikeAttention(cfg, dim, num_heads)
        self.mlp = TokenMlp(cfg, dim, int(dim * cfg.mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        T, B, C, H, W = x.shape
        x = x.flatten(3).transpose(2, 3)  # (T, B, N, C)
        x = x + self.drop_path(self.attn(x))
        x = x + self.drop_path(self.mlp(x))
        return x.transpose(2, 3).reshape(T, B, C, H, W)


class LocalPath(nn.Module):
    """Local pathway from the stage-3 input to stage-4 resolution: ``BN(Conv1x1(DWConv3x3 s2 (PLIF(x))))``."""

    def __init__(self, cfg: SVFormerConfig, cin: int, cout: int) -> None:
        super().__init__()
        self.lif = _neuron(cfg)
        self.dwconv = _conv(cin, cin, 3, 2, 1, groups=cin)
        self.pwconv = _conv(cin, cout, 1)
        self.bn = _bn(cfg, cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.pwconv(self.dwconv(self.lif(x))))


class TemporalHead(nn.Module):
    """``Linear(BN3d(Conv3d(PLIF(x))))``: a grouped Conv3d whose kernel spans all T timesteps and the whole
    final feature map collapses (T, B, 2*C4, H', W') to (B, 2*C4); logits are not averaged over time."""

    def __init__(self, cfg: SVFormerConfig, dim: int, groups: int) -> None:
        super().__init__()
        side = cfg.img_size // 32
        self.lif = _neuron(cfg)
        self.conv3d = nn.Conv3d(dim, dim, (cfg.num_frames, side, side), groups=groups)
        self.bn = nn.BatchNorm3d(dim)
        self.fc = nn.Linear(dim, cfg.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.lif(x).permute(1, 2, 0, 3, 4)  # (B, C, T, H, W)
        x = self.bn(self.conv3d(x)).flatten(1)
        return self.fc(x)


class SVFormer(nn.Module):
    """The spiking video transformer. ``forward`` takes clips (B, C, T, H, W) and returns logits (B, classes).

    In a grad-enabled forward (training, fine-tuning, DDP) the spike tensors autograd saves are kept as bits
    (:func:`~svformer_deploy.models.spike_packing.pack_saved_spikes`): same spikes, bit-identical gradients,
    about 32x less memory for them; eval, no-grad and export forwards run without it.
    """

    def __init__(self, config: SVFormerConfig) -> None:
        super().__init__()
        self.config = config
        c, d, heads = config.embed_dims, config.depths, config.num_heads
        dpr = torch.linspace(0, config.drop_path_rate, sum(d)).tolist()
        offs = [0, d[0], d[0] + d[1], d[0] + d[1] + d[2]]
        self.patch_embed1 = PatchEmbed(config, config.in_chans, c[0], 6, 4, 1, spiking_input=False)
        self.blocks1 = nn.ModuleList(CBlock(config, c[0], dpr[offs[0] + i]) for i in range(d[0]))
        self.patch_embed2 = PatchEmbed(config, c[0], c[1], 4, 2, 1, spiking_input=True)
        self.blocks2 = nn.ModuleList(CBlock(config, c[1], dpr[offs[1] + i]) for i in range(d[1]))
        self.patch_embed3 = PatchEmbed(config, c[1], c[2], 4, 2, 1, spiking_input=True)
        self.blocks3 = nn.ModuleList(SABlock(config, c[2], heads[2], dpr[offs[2] + i]) for i in range(d[2]))
        self.patch_embed4 = PatchEmbed(config, c[2], c[3], 4, 2, 1, spiking_input=True)
        self.blocks4 = nn.ModuleList(SABlock(config, c[3], heads[3], dpr[offs[3] + i]) for i in range(d[3]))
        self.local_path = LocalPath(config, c[2], c[3])
        self.head = TemporalHead(config, 2 * c[3], groups=c[3])
        self.apply(_init_weights)

    def check_input(self, x: Tensor) -> None:
        """Raise :class:`InputShapeError` unless ``x`` is (B, C, T, H, W) as the config expects."""
        want = self.config.input_shape
        if x.dim() != 5 or tuple(x.shape[1:]) != want:
            raise InputShapeError(
                f"expected clips of shape (B, {', '.join(map(str, want))}) = (B, C, T, H, W), got {tuple(x.shape)}; "
                f"resize/crop frames to {self.config.img_size}x{self.config.img_size} and sample "
                f"{self.config.num_frames} frames per clip")

    def forward_features(self, x: Tensor) -> Tensor:
        """Backbone on time-major frames (T, B, C, H, W) -> fused features (T, B, 2*C4, H/32, W/32)."""
        x = self.patch_embed1(x)
        for blk in self.blocks1:
            x = blk(x)
        x = self.patch_embed2(x)
        for blk in self.blocks2:
            x = blk(x)
        x = self.patch_embed3(x)
        x_local = self.local_path(x)
        for blk in self.blocks3:
            x = blk(x)
        x = self.patch_embed4(x)
        for blk in self.blocks4:
            x = blk(x)
        return torch.cat((x_local, x), dim=2)

    def forward_head(self, features: Tensor) -> Tensor:
        """Temporal head: (T, B, 2*C4, H', W') -> logits (B, classes)."""
        return self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        with pack_saved_spikes():
            return self.forward_head(self.forward_features(x.permute(2, 0, 1, 3, 4)))


def _init_weights(m: nn.Module) -> None:
    """As the reference: truncated normal (std 0.02) for Linear weights, zero Linear biases; convs keep
    PyTorch's default init."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
