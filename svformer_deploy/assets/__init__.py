"""Files shipped inside the package: trained checkpoints.

``svformer_tiny_moving_digits.pt``: an ``svformer_tiny`` (bn="shared") trained on moving digits by this project's
own ``svformer-deploy train`` command; its meta stores the exact command, the seed and the validation metrics
(``svformer-deploy info`` on the path prints them).

``svformer_tiny_moving_digits_per_timestep_bn.pt``: the same model with the paper's per-timestep BatchNorm
(bn="per_timestep", T x C statistics), trained the same way; the input of ``svformer-deploy finetune --bn shared``
(see docs/training.md), with its command, seed and metrics in its meta.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from svformer_deploy.errors import CheckpointNotFoundError

__all__ = ["DEFAULT_CHECKPOINT", "PER_TIMESTEP_CHECKPOINT", "default_checkpoint", "per_timestep_checkpoint"]

DEFAULT_CHECKPOINT = "svformer_tiny_moving_digits.pt"
PER_TIMESTEP_CHECKPOINT = "svformer_tiny_moving_digits_per_timestep_bn.pt"


def _asset(name: str) -> Path:
    path = Path(str(importlib.resources.files(__name__) / name))
    if not path.is_file():
        raise CheckpointNotFoundError(f"the shipped checkpoint {path} is missing from this installation; reinstall "
                                      "svformer-deploy or train one with `svformer-deploy train`")
    return path


def default_checkpoint() -> Path:
    """Path of the shipped ``svformer_tiny`` moving-digits checkpoint (shared BN)."""
    return _asset(DEFAULT_CHECKPOINT)


def per_timestep_checkpoint() -> Path:
    """Path of the shipped per-timestep-BN ``svformer_tiny`` moving-digits checkpoint."""
    return _asset(PER_TIMESTEP_CHECKPOINT)
