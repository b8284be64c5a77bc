"""BatchNorm over multi-step (T, B, ...) tensors, per timestep (the reference) or shared across time.

``per_timestep`` reproduces the reference's ``BatchNorm{1,2}d_eT``: T and C are merged into T*C features,
so every timestep t has its own statistics and affine parameters, stored at index ``t * C + c``::

    y[t, b, c, ...] = (x[t, b, c, ...] - mean[t*C + c]) / sqrt(var[t*C + c] + eps) * gamma[t*C + c] + beta[t*C + c]

``shared`` uses one set of C statistics and affine parameters for all timesteps, so in eval mode it is the
time-invariant affine map ``y = scale[c] * x + shift[c]`` that folds into the preceding conv or linear layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from svformer_deploy.models.config import BNMode

__all__ = ["TemporalBatchNorm"]


class TemporalBatchNorm(nn.Module):
    """BatchNorm for (T, B, C, *spatial) tensors, or (T, B, N, C) token tensors with ``channels_last=True``.

    Args:
        num_features: C.
        num_steps: T (only used by ``mode="per_timestep"``, where parameters have T*C entries).
        mode: ``"per_timestep"`` or ``"shared"``.
        channels_last: the channel axis is the last one (token layout) instead of axis 2.
    """

    def __init__(self, num_features: int, num_steps: int, mode: BNMode = "per_timestep", channels_last: bool = False,
                 eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features = num_features
        self.num_steps = num_steps
        self.mode = mode
        self.channels_last = channels_last
        self.eps = eps
        self.momentum = momentum
        n = num_features * num_steps if mode == "per_timestep" else num_features
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def _bn(self, x: Tensor) -> Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps)

    def forward(self, x: Tensor) -> Tensor:
        T, B = x.shape[:2]
        if self.mode == "shared":
            if self.channels_last:
                return self._bn(x.reshape(-1, x.shape[-1])).reshape(x.shape)
            return self._bn(x.flatten(0, 1)).reshape(x.shape)
        if T != self.num_steps:
            from svformer_deploy.errors import InputShapeError

            raise InputShapeError(f"per-timestep BatchNorm was built for T={self.num_steps} timesteps, got T={T}; "
                                  "feed clips of the configured num_frames (or use bn='shared')")
        if self.channels_last:  # (T, B, N, C) -> (B, T*C, N), as the reference's transpose + BatchNorm1d_eT
            y = self._bn(x.permute(1, 0, 3, 2).reshape(B, T * x.shape[3], x.shape[2]))
            return y.reshape(B, T, x.shape[3], x.shape[2]).permute(1, 0, 3, 2)
        y = self._bn(x.transpose(0, 1).reshape(B, T * x.shape[2], *x.shape[3:]))
        return y.reshape(B, T, *x.shape[2:]).transpose(0, 1)

    @torch.no_grad()
    def affine(self) -> tuple[Tensor, Tensor]:
        """Eval-mode BN as ``y = scale * x + shift``: tensors of shape (T, C) (per_timestep) or (C,) (shared).

        ``scale = gamma / sqrt(running_var + eps)``, ``shift = beta - running_mean * scale``.
        """
        scale = self.weight / torch.sqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        if self.mode == "per_timestep":
            return scale.reshape(self.num_steps, self.num_features), shift.reshape(self.num_steps, self.num_features)
        return scale, shift

    def extra_repr(self) -> str:
        return f"{self.num_features}, T={self.num_steps}, mode={self.mode}, channels_last={self.channels_last}"
