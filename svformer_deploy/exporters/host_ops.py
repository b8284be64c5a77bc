"""Host operations: the parts of a bundle that run outside the neuromorphic partitions.

A registry maps the ``op`` name written in the manifest to a pure function
``f(inputs: list[Tensor], attrs: dict, params: dict[str, Tensor], ctx: HostContext) -> list[Tensor]``.
Per-timestep ops see (B, *shape) tensors; per-clip ops see (T, B, *shape) tensors. Each op's manifest entry
also states its equation, so a runtime without this package can implement it. ``ctx`` gives an op the
manifest's model config and a way to run the partitions it calls (hybrid host ops such as
``svformer_float_host``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from svformer_deploy.errors import BundleFormatError

__all__ = ["HOST_OPS", "HostContext", "register_host_op", "registration_problem", "run_host_op", "partitions_replacing"]

PartitionFn = Callable[[str, Tensor], list[Tensor]]
"""``run(partition name, input spikes (T, B, C, H, W)) -> output spikes of every layer, (T, B, C', H', W')``."""


@dataclass(frozen=True)
class HostContext:
    """What a host op may use besides its inputs: the bundle's model ``config`` and ``run_partition``."""

    config: dict[str, Any] = field(default_factory=dict)
    run_partition: PartitionFn | None = None


HostOpFn = Callable[[list[Tensor], dict[str, Any], dict[str, Tensor], HostContext], list[Tensor]]
HOST_OPS: dict[str, HostOpFn] = {}


def register_host_op(name: str) -> Callable[[HostOpFn], HostOpFn]:
    def deco(fn: HostOpFn) -> HostOpFn:
        HOST_OPS[name] = fn
        return fn

    return deco


def registration_problem(op: str) -> str | None:
    """None when ``op`` is a registered host op; else the words for what is wrong with it ("'x', which is not
    registered (known: ...)"): the one check of the plan's host-op nodes, the manifest's host ops and the runner."""
    return None if op in HOST_OPS else f"{op!r}, which is not registered (known: {', '.join(sorted(HOST_OPS))})"


def run_host_op(op: str, inputs: list[Tensor], attrs: dict[str, Any], params: dict[str, Tensor],
                ctx: HostContext | None = None) -> list[Tensor]:
    problem = registration_problem(op)
    if problem:
        raise BundleFormatError(f"bundle declares host op {problem}; upgrade svformer-deploy")
    return HOST_OPS[op](inputs, attrs, params, ctx or HostContext())


@register_host_op("spike_attention_product")
def spike_attention_product(inputs: list[Tensor], attrs: dict[str, Any], params: dict[str, Tensor],
                            ctx: HostContext) -> list[Tensor]:
    """``A_j = Q_j (K_j^T V_j) * scale`` per head j; q, k, v are (B, C, H, W) maps whose channels j*d..j*d+d-1
    hold head j, and whose H*W positions are the tokens. Output (B, C, H, W), channel j*d + i."""
    q, k, v = inputs
    B, C, H, W = q.shape
    h, d = attrs["num_heads"], attrs["head_dim"]

    def tokens(x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, h, N, d)
        return x.reshape(B, h, d, H * W).transpose(-2, -1)

    a = (tokens(q) @ (tokens(k).transpose(-2, -1) @ tokens(v))) * attrs["scale"]
    return [a.transpose(-2, -1).reshape(B, C, H, W)]


@register_host_op("concat")
def concat(inputs: list[Tensor], attrs: dict[str, Any], params: dict[str, Tensor], ctx: HostContext) -> list[Tensor]:
    """Concatenate along the (batch-excluded) axis ``attrs["axis"]``."""
    return [torch.cat(inputs, dim=attrs["axis"] + 1)]


@register_host_op("temporal_head")
def temporal_head(inputs: list[Tensor], attrs: dict[str, Any], params: dict[str, Tensor],
                  ctx: HostContext) -> list[Tensor]:
    """Grouped Conv3d over the whole (T, H', W') spike volume (BatchNorm3d folded in), then the classifier:
    spikes (T, B, C, H', W') -> logits (B, K)."""
    (s,) = inputs
    x = s.permute(1, 2, 0, 3, 4)  # (B, C, T, H, W)
    z = F.conv3d(x, params["conv3d_weight"], params["conv3d_bias"], groups=attrs["groups"]).flatten(1)
    return [F.linear(z, params["fc_weight"], params["fc_bias"])]


def _tap_chw(x: Tensor, layout: str, tap: Mapping[str, Any]) -> Tensor:
    from svformer_deploy.models.recording import to_chw

    x = to_chw(x, layout, (-1, *tap["shape"][1:]))
    ch = tap.get("channels")
    return x if not ch else x[:, :, ch[0]:ch[1]]


def _tap_insert(full: Tensor, chw: Tensor, layout: str, tap: Mapping[str, Any]) -> Tensor:
    from svformer_deploy.models.recording import from_chw

    chw = chw.to(full.dtype)
    ch = tap.get("channels")
    if not ch:
        return from_chw(chw, layout, full)
    if layout != "chw":
        raise BundleFormatError(f"partition tap {tap['neuron']}: a channel slice of a '{layout}' neuron layer")
    out = full.clone()
    out[:, :, ch[0]:ch[1]] = chw
    return out


@contextmanager
def partitions_replacing(model: torch.nn.Module, partitions: Mapping[str, Mapping[str, Any]],
                         run_partition: PartitionFn) -> Iterator[None]:
    """Inside the block, ``model(x)`` takes the output of every neuron layer a partition produces from that
    partition instead of its own neuron.

    ``partitions[name] = {"source": tap, "taps": [tap per layer]}`` with ``tap = {"neuron", "shape" (C, H, W),
    "channels" [a, b] or None}``: the partition reads the spikes of ``source`` (after any replacement made
    earlier in the same forward) and its layer i's spikes replace ``taps[i]`` (channels [a, b) only when given).
    Layouts are those the neuron layers declare. Hooks run in execution order, so chained partitions see
    each other's spikes.
    """
    from svformer_deploy.models.recording import forward_hooks

    mods = dict(model.named_modules())
    seen: dict[str, Tensor] = {}  # neuron -> its output in this forward (after replacement)
    results: dict[str, list[Tensor]] = {}

    def keep(neuron: str):
        def hook(_m, _i, out: Tensor) -> None:
            seen[neuron] = out
        return hook

    def replace(name: str, i: int):
        part = partitions[name]
        tap = part["taps"][i]
        layout = mods[tap["neuron"]].layout

        def hook(_m, _i, out: Tensor) -> Tensor:
            if i == 0:
                src = part["source"]
                results[name] = run_partition(name, _tap_chw(seen[src["neuron"]], mods[src["neuron"]].layout, src))
            new = _tap_insert(out, results[name][i], layout, tap)
            seen[tap["neuron"]] = new
            return new
        return hook

    watched = {p["source"]["neuron"] for p in partitions.values()} | {t["neuron"] for p in partitions.values()
                                                                       for t in p["taps"]}
    for n in watched:
        if n not in mods:
            raise BundleFormatError(f"partition tap names neuron layer '{n}', which the model does not have")
    hooks = [(mods[n], keep(n)) for n in sorted(watched)]  # first: runs before any replacement on that module
    hooks += [(mods[p["taps"][i]["neuron"]], replace(name, i)) for name, p in partitions.items()
              for i in range(len(p["taps"]))]
    try:
        with forward_hooks(hooks):
            yield
    finally:
        seen.clear()
        results.clear()


@register_host_op("svformer_float_host")
def svformer_float_host(inputs: list[Tensor], attrs: dict[str, Any], params: dict[str, Tensor],
                        ctx: HostContext) -> list[Tensor]:
    """``logits = SVFormer.forward(frames)`` in float32 (the model built from the manifest's config, its state
    dict in ``params``), where every neuron layer a partition of ``attrs["partitions"]`` produces takes that
    partition's spikes (see :func:`partitions_replacing`). frames (T, B, C, H, W) -> logits (B, K)."""
    from svformer_deploy.models import SVFormerConfig, create_model

    if ctx.run_partition is None:
        raise BundleFormatError("host op svformer_float_host needs a partition runtime (run_partition)")
    model = create_model(SVFormerConfig.from_dict(ctx.config))
    model.load_state_dict(params)
    model.eval()
    (frames,) = inputs
    with torch.no_grad(), partitions_replacing(model, attrs["partitions"], ctx.run_partition):
        return [model(frames.permute(1, 2, 0, 3, 4))]
