"""Shared fixtures: a small svformer_tiny checkpoint whose BatchNorms have non-trivial statistics (so folding is
really exercised) and whose neurons fire at realistic rates, and generated clips."""

import pytest
import torch

from svformer_deploy.models import create_model, save_checkpoint
from svformer_deploy.models.norm import TemporalBatchNorm


def active_model(seed: int = 0, **overrides):
    """svformer_tiny with random BN running stats / affine params; neurons fire at a few to ~30 %."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # conv / linear initialisation
    model = create_model("svformer_tiny", **overrides)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (TemporalBatchNorm, torch.nn.BatchNorm3d)):
                n = m.running_mean.numel()
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.05)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.02 + 0.01)
                m.weight.copy_(torch.rand(n, generator=g) * 1.0 + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.3 + 0.3)
        for name, p in model.named_parameters():
            if name.endswith(".w"):  # PLIF: spread tau over ~1.3 .. 4
                p.copy_(torch.empty((), dtype=p.dtype).uniform_(-1.1, 1.2, generator=g))
    return model.eval()


def clips(n: int = 2, seed: int = 1, T: int = 8, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, T, size, size, generator=g)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, active_model(), class_names=[f"digit {i}" for i in range(10)])
    return path
