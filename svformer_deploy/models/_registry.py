"""One registry of named model configs, one factory (after timm's ``register_model`` / ``create_model``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from svformer_deploy.errors import UnknownModelError
from svformer_deploy.models.config import SVFormerConfig

__all__ = ["register_model", "list_models", "get_config", "create_model"]

_CONFIGS: dict[str, Callable[[], SVFormerConfig]] = {}


def register_model(fn: Callable[[], SVFormerConfig]) -> Callable[[], SVFormerConfig]:
    """Register a config function under its own name."""
    _CONFIGS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_CONFIGS)


def get_config(name: str, **overrides: Any) -> SVFormerConfig:
    """The registered config ``name`` with ``overrides`` applied (unknown keys raise ``ConfigError``)."""
    if name not in _CONFIGS:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    cfg = _CONFIGS[name]()
    return cfg.replace(**overrides) if overrides else cfg


def create_model(name: str | SVFormerConfig, **overrides: Any) -> "SVFormer":  # noqa: F821
    """Build a freshly initialised model from a registered name (or a config) and overrides.

    >>> m = create_model("svformer_tiny", num_classes=10, bn="shared")
    """
    from svformer_deploy.models.svformer import SVFormer

    cfg = name.replace(**overrides) if isinstance(name, SVFormerConfig) else get_config(name, **overrides)
    return SVFormer(cfg)


@register_model
def svformer_ucf101() -> SVFormerConfig:
    """The paper's model (UCF101, trained from scratch): 13,801,612 parameters, T=16, 224x224."""
    return SVFormerConfig(
        name="svformer_ucf101", num_classes=101, img_size=224, num_frames=16,
        embed_dims=(128, 256, 384, 512), depths=(1, 1, 3, 1), head_dim=64, mlp_ratio=2.0,
        bn="per_timestep", drop_path_rate=0.2,
    )


@register_model
def svformer_small() -> SVFormerConfig:
    """A quarter-width SVFormer at 64x64, T=8: minutes per epoch on a CPU, for real video at low resolution."""
    return SVFormerConfig(
        name="svformer_small", num_classes=101, img_size=64, num_frames=8,
        embed_dims=(64, 128, 192, 256), depths=(1, 1, 2, 1), head_dim=32, mlp_ratio=2.0,
        bn="shared", drop_path_rate=0.1,
    )


@register_model
def svformer_tiny() -> SVFormerConfig:
    """The CPU-trainable default: every part of SVFormer at 64x64, T=8, a few hundred k parameters."""
    return SVFormerConfig(
        name="svformer_tiny", num_classes=10, img_size=64, num_frames=8,
        embed_dims=(32, 64, 96, 128), depths=(1, 1, 1, 1), head_dim=32, mlp_ratio=2.0,
        bn="shared", drop_path_rate=0.0,
    )
