"""A deliberately literal, independent SVFormer for tests: composed from spikingjelly 0.0.0.0.14's layers the way
the official ``Uniformer2d_psnn_try`` composes them (same module names, same tensor layout tricks: BatchNorm over
T*C features via permute/reshape, qkv split with reshape/permute, x_lp concatenated first, squeeze before the head).

Written from reading the official file; it shares no code with ``svformer_deploy`` so that agreement is evidence.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import layer, neuron, surrogate
from torch import nn

TN = 16


def plif():
    return neuron.ParametricLIFNode(surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m",
                                    backend="torch")


class BN1dT(nn.BatchNorm1d):
    """Input [T, B, C, N]; T and C merged into T*C BatchNorm1d features."""

    def forward(self, x):
        T, B, C, N = x.shape
        y = super().forward(x.permute(1, 0, 2, 3).contiguous().reshape(B, T * C, N).contiguous())
        return y.reshape(B, T, C, N).contiguous().permute(1, 0, 2, 3).contiguous()


class BN2dT(nn.BatchNorm2d):
    """Input [T, B, C, H, W]; T and C merged into T*C BatchNorm2d features."""

    def forward(self, x):
        T, B, C, H, W = x.shape
        y = super().forward(x.permute(1, 0, 2, 3, 4).contiguous().reshape(B, T * C, H, W).contiguous())
        return y.reshape(B, T, C, H, W).contiguous().permute(1, 0, 2, 3, 4).contiguous()


class Mlp(nn.Module):
    def __init__(self, dim, hidden, T):
        super().__init__()
        self.act1, self.fc1, self.norm1 = plif(), layer.Linear(dim, hidden), BN1dT(hidden * T)
        self.act2, self.fc2, self.norm2 = plif(), layer.Linear(hidden, dim), BN1dT(dim * T)

    def forward(self, x):
        x = self.fc1(self.act1(x))
        x = self.norm1(x.transpose(-2, -1)).transpose(-2, -1)
        x = self.fc2(self.act2(x))
        return self.norm2(x.transpose(-2, -1)).transpose(-2, -1)


class Attention(nn.Module):
    def __init__(self, dim, heads, T):
        super().__init__()
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.in_lif = plif()
        self.qkv = layer.Linear(dim, dim * 3)
        self.norm1 = BN1dT(dim * 3 * T)
        self.q_lif, self.k_lif, self.v_lif = plif(), plif(), plif()
        self.proj_lif = plif()
        self.proj = layer.Linear(dim, dim)
        self.norm2 = BN1dT(dim * T)

    def forward(self, x):
        x = self.in_lif(x)
        T, B, N, C = x.shape
        h, d = self.num_heads, C // self.num_heads
        qkv = self.norm1(self.qkv(x).transpose(-2, -1)).transpose(-2, -1).flatten(0, 1)
        qkv = qkv.reshape(T * B, N, 3, h, d).permute(2, 0, 3, 1, 4)
        q = self.q_lif(qkv[0].reshape(T, B, h, N, d).contiguous())
        k = self.k_lif(qkv[1].reshape(T, B, h, N, d).contiguous())
        v = self.v_lif(qkv[2].reshape(T, B, h, N, d).contiguous())
        x = (q @ (k.transpose(-2, -1) @ v)) * self.scale
        x = x.transpose(2, 3).reshape(T, B, N, C).contiguous()
        x = self.proj(self.proj_lif(x))
        return self.norm2(x.transpose(-2, -1)).transpose(-2, -1)


class CMlp(nn.Module):
    def __init__(self, dim, hidden, T):
        super().__init__()
        self.act1, self.fc1, self.norm1 = plif(), layer.Conv2d(dim, hidden, 1, step_mode="m"), BN2dT(hidden * T)
        self.act2, self.fc2, self.norm2 = plif(), layer.Conv2d(hidden, dim, 1, step_mode="m"), BN2dT(dim * T)

    def forward(self, x):
        x = self.norm1(self.fc1(self.act1(x)))
        return self.norm2(self.fc2(self.act2(x)))


class CBlock(nn.Module):
    def __init__(self, dim, ratio, T):
        super().__init__()
        self.act1 = plif()
        self.conv1 = layer.Conv2d(dim, dim, 1, step_mode="m")
        self.attn = layer.Conv2d(dim, dim, 5, 1, 2, groups=dim, step_mode="m")
        self.conv2 = layer.Conv2d(dim, dim, 1, step_mode="m")
        self.norm2 = BN2dT(dim * T)
        self.mlp = CMlp(dim, int(dim * ratio), T)

    def forward(self, x):
        x = x + self.norm2(self.conv2(self.attn(self.conv1(self.act1(x)))))
        return x + self.mlp(x)


class SABlock(nn.Module):
    def __init__(self, dim, heads, ratio, T):
        super().__init__()
        self.attn = Attention(dim, heads, T)
        self.mlp = Mlp(dim, int(dim * ratio), T)

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = x.flatten(3).transpose(2, 3)
        x = x + self.attn(x)
        x = x + self.mlp(x)
        return x.transpose(2, 3).reshape(T, B, C, H, W)


class PatchEmbed(nn.Module):
    def __init__(self, cin, cout, patch, T, lif=True):
        super().__init__()
        if lif:
            self.in_lif = plif()
        self.proj = layer.Conv2d(cin, cout, patch + 2, patch, 1, step_mode="m")
        self.norm = BN2dT(cout * T)

    def forward(self, x):
        if hasattr(self, "in_lif"):
            x = self.in_lif(x)
        return self.norm(self.proj(x))


class ReferenceSVFormer(nn.Module):
    def __init__(self, embed_dim, depth, head_dim, mlp_ratio, num_classes, img_size, T):
        super().__init__()
        heads = [d // head_dim for d in embed_dim]
        self.patch_embed1 = PatchEmbed(3, embed_dim[0], 4, T, lif=False)
        self.blocks1 = nn.ModuleList(CBlock(embed_dim[0], mlp_ratio, T) for _ in range(depth[0]))
        self.patch_embed2 = PatchEmbed(embed_dim[0], embed_dim[1], 2, T)
        self.blocks2 = nn.ModuleList(CBlock(embed_dim[1], mlp_ratio, T) for _ in range(depth[1]))
        self.patch_embed3 = PatchEmbed(embed_dim[1], embed_dim[2], 2, T)
        self.blocks3 = nn.ModuleList(SABlock(embed_dim[2], heads[2], mlp_ratio, T) for _ in range(depth[2]))
        self.patch_embed4 = PatchEmbed(embed_dim[2], embed_dim[3], 2, T)
        self.blocks4 = nn.ModuleList(SABlock(embed_dim[3], heads[3], mlp_ratio, T) for _ in range(depth[3]))
        self.lplif = plif()
        self.lpDWConv = layer.Conv2d(embed_dim[2], embed_dim[2], 3, 2, 1, groups=embed_dim[2], step_mode="m")
        self.lpPWConv = layer.Conv2d(embed_dim[2], embed_dim[-1], 1, step_mode="m")
        self.lpBN = BN2dT(embed_dim[-1] * T)
        f = embed_dim[-1] * 2
        self.lif_bf_head = plif()
        self.dwconv_bf_head = nn.Conv3d(f, f, (T, img_size // 32, img_size // 32), groups=embed_dim[-1])
        self.dwconv_bn = nn.BatchNorm3d(f)
        self.head = layer.Linear(f, num_classes)

    def forward(self, x):
        x = x.permute(2, 0, 1, 3, 4).contiguous()
        x = self.patch_embed1(x)
        for b in self.blocks1:
            x = b(x)
        x = self.patch_embed2(x)
        for b in self.blocks2:
            x = b(x)
        x = self.patch_embed3(x)
        x_lp = self.lpBN(self.lpPWConv(self.lpDWConv(self.lplif(x))))
        for b in self.blocks3:
            x = b(x)
        x = self.patch_embed4(x)
        for b in self.blocks4:
            x = b(x)
        x = torch.cat((x_lp, x), 2)
        x = self.lif_bf_head(x).permute(1, 2, 0, 3, 4)
        x = self.dwconv_bn(self.dwconv_bf_head(x))
        B = x.shape[0]
        x = torch.squeeze(x)
        if B == 1:
            x = torch.unsqueeze(x, 0)
        return self.head(x)


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and BN statistic a non-trivial random value (so BN, tau etc. are really tested)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".w"):
                p.copy_(torch.empty(()).uniform_(-1.5, 1.5, generator=g))  # tau in ~[1.2, 5.5]
            elif p.dim() == 1 and ("norm" in name or "bn" in name.lower()):
                p.copy_(torch.empty_like(p).uniform_(1.5, 3.0, generator=g) if name.endswith("weight")
                        else torch.empty_like(p).uniform_(0.0, 1.0, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.empty_like(b).uniform_(-0.1, 0.1, generator=g))
            elif name.endswith("running_var"):
                b.copy_(torch.empty_like(b).uniform_(0.5, 1.5, generator=g))
    return model
