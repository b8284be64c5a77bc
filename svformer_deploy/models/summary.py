"""Human-readable model summaries (``svformer-deploy info``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from svformer_deploy.models._registry import create_model, list_models
from svformer_deploy.models.checkpoint import load_checkpoint
from svformer_deploy.models.neurons import PLIF, SpikingNeuron
from svformer_deploy.models.recording import forward_hooks
from svformer_deploy.models.svformer import DropPath, SVFormer

__all__ = ["load_model_or_name", "layer_shapes", "summarize"]


def load_model_or_name(name_or_path: str) -> tuple[SVFormer, dict[str, Any]]:
    """A checkpoint file if the path exists (or looks like a file), else a registered model name."""
    if name_or_path in list_models():
        return create_model(name_or_path).eval(), {}
    if Path(name_or_path).exists() or Path(name_or_path).suffix:
        return load_checkpoint(name_or_path)
    return create_model(name_or_path).eval(), {}  # raises UnknownModelError listing the names


def layer_shapes(model: SVFormer, batch: int = 1) -> list[tuple[str, str, tuple[int, ...]]]:
    """(dotted name, type, output shape) of every leaf layer for one forward of a zero clip batch."""
    rows: list[tuple[str, str, tuple[int, ...]]] = []

    def hook(name: str):
        def fn(mod: nn.Module, _i: tuple, out: torch.Tensor) -> None:
            rows.append((name, type(mod).__name__, tuple(out.shape)))
        return fn

    layers = [(m, hook(name)) for name, m in model.named_modules()
              if name and not isinstance(m, DropPath) and (not list(m.children()) or isinstance(m, SpikingNeuron))]
    with forward_hooks(layers), torch.no_grad():
        model.eval()(torch.zeros(batch, *model.config.input_shape))
    return rows


def summarize(model: SVFormer, meta: dict[str, Any] | None = None) -> Any:
    """A rich renderable: config, parameter count, neuron layers and per-layer output shapes."""
    from rich.console import Group
    from rich.table import Table

    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())
    neurons = [(n, m) for n, m in model.named_modules() if isinstance(m, SpikingNeuron)]
    head = Table.grid(padding=(0, 2))
    head.add_row("model", cfg.name)
    head.add_row("parameters", f"{n_params:,}")
    head.add_row("timesteps T", f"{cfg.num_frames} (one frame per step)")
    head.add_row("input (B, C, T, H, W)", f"(B, {', '.join(map(str, cfg.input_shape))})")
    head.add_row("classes", str(cfg.num_classes))
    head.add_row("widths / depths", f"{list(cfg.embed_dims)} / {list(cfg.depths)}, heads {list(cfg.num_heads)}")
    head.add_row("BatchNorm", cfg.bn)
    head.add_row("neuron layers", f"{len(neurons)} ({cfg.neuron})")
    for key in ("sha256", "command", "val_top1"):
        if meta and key in meta:
            head.add_row(key, str(meta[key]))
    table = Table(title="layers (output shape for batch 1)", show_lines=False)
    table.add_column("layer")
    table.add_column("type")
    table.add_column("output shape")
    table.add_column("tau", justify="right")
    mods = dict(model.named_modules())
    for name, kind, shape in layer_shapes(model):
        m = mods.get(name)
        tau = f"{m.tau:.3f}" if isinstance(m, PLIF) else ""
        table.add_row(name, kind, str(shape), tau)
    return Group(head, table)
