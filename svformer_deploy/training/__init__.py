"""Training and evaluation of SVFormer models on moving digits or UCF101 / HMDB51 folders.

The names below load :mod:`svformer_deploy.training.engine` on first use (PEP 562), so that the light
declarations of :mod:`svformer_deploy.training.outputs` (which the CLI's help reads) import without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["TrainConfig", "TrainResult", "train", "param_groups", "warmup_cosine", "collate_skip_bad",
           "soft_cross_entropy", "topk_correct", "precise_bn"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'svformer_deploy.training' has no attribute {name!r}")
    value = getattr(importlib.import_module("svformer_deploy.training.engine"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
