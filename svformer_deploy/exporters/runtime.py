"""Execute an export bundle of any target: its schedule step by step, scheduled partitions in a target's
runtime, host operations from the host-op registry (:mod:`svformer_deploy.exporters.host_ops`).

The execution contract is the bundle's (:mod:`svformer_deploy.exporters.bundle`): per-timestep steps run once
per frame in schedule order, per-clip steps once on the stacked (T, B, ...) signals. A target brings the runtime
of its partitions as :class:`PartitionStepper` objects (NIR: :mod:`svformer_deploy.exporters.nir.runtime`) or,
for partitions a host op calls, as a ``run_partition`` callable (Lava: the Loihi emulation, or Lava itself).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from svformer_deploy.errors import VerificationError
from svformer_deploy.exporters.bundle import HOST_PARAMS_NAME, Manifest
from svformer_deploy.exporters.host_ops import HostContext, PartitionFn, run_host_op

__all__ = ["BundleRun", "PartitionStepper", "run_bundle", "load_host_params"]


@dataclass
class BundleRun:
    """Output of one bundle execution on a batch of clips."""

    logits: Tensor
    spikes: dict[str, Tensor]                       # neuron node name -> (T, B, *shape)
    runtimes: dict[str, str] = field(default_factory=dict)  # partition -> the runtime that ran it


class PartitionStepper(Protocol):
    """A scheduled partition in a target's runtime: ``reset()`` before each clip batch; ``step(inputs)`` runs one
    timestep (``inputs``: the partition's input bindings -> (B, ...) tensors) and returns (outputs by output
    binding, spikes by neuron node name); ``runtime`` names the runtime for the report."""

    runtime: str

    def reset(self) -> None: ...

    def step(self, inputs: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]: ...


def load_host_params(bundle: str | Path) -> dict[str, Tensor]:
    path = Path(bundle) / HOST_PARAMS_NAME
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as z:
        return {k: torch.from_numpy(z[k].copy()) for k in z.files}


def run_bundle(manifest: Manifest, host_params: dict[str, Tensor], clips: Tensor,
               runners: Mapping[str, PartitionStepper] | None = None,
               run_partition: PartitionFn | None = None) -> BundleRun:
    """Execute the bundle on normalised clips (B, C, T, H, W) and return logits and every neuron layer's spikes.

    Scheduled partitions run in ``runners`` (one :class:`PartitionStepper` per scheduled partition: a target's
    runtime, e.g. :func:`svformer_deploy.exporters.nir.runtime.nir_runners`); partitions a host op calls run
    through ``run_partition`` (a target's partition runtime, e.g. the Loihi fixed-point emulation)."""
    runners = dict(runners or {})
    missing = [s["partition"] for s in manifest.schedule if "partition" in s and s["partition"] not in runners]
    if missing:
        raise VerificationError(f"no runtime was given for the scheduled partition(s) {missing[:3]}")
    ctx = HostContext(config=manifest.config, run_partition=run_partition)
    for r in runners.values():
        r.reset()
    T = clips.shape[2]
    frames = clips.permute(2, 0, 1, 3, 4)
    seq: dict[str, list[Tensor]] = defaultdict(list)  # per-timestep signals, stacked later
    spikes: dict[str, list[Tensor]] = defaultdict(list)
    per_step = [s for s in manifest.schedule if _time_of(manifest, s) == "per_timestep"]
    per_clip = [s for s in manifest.schedule if _time_of(manifest, s) == "per_clip"]
    kept = {manifest.graph_output} | {i for s in per_clip if "host_op" in s
                                      for i in manifest.host_op(s["host_op"]).inputs}
    for t in range(T):
        sig: dict[str, Tensor] = {manifest.graph_input: frames[t]}
        for s in per_step:
            if "partition" in s:
                p = manifest.partition(s["partition"])
                outs, spk = runners[p.name].step({node: sig[name] for node, name in p.inputs.items()})
                for node, name in p.outputs.items():
                    sig[name] = outs[node]
                for k, v in spk.items():
                    spikes[k].append(v)
            else:
                h = manifest.host_op(s["host_op"])
                res = run_host_op(h.op, [sig[i] for i in h.inputs], h.attrs, _params(h, host_params), ctx)
                sig.update(zip(h.outputs, res))
        for k in kept & sig.keys():  # only what the per-clip steps read (and the output) is stacked over time
            seq[k].append(sig[k])
    clip_sig = {k: torch.stack(v) for k, v in seq.items()}
    for s in per_clip:
        if "partition" in s:
            raise VerificationError("per-clip partitions are not supported by this runtime")
        h = manifest.host_op(s["host_op"])
        res = run_host_op(h.op, [clip_sig[i] for i in h.inputs], h.attrs, _params(h, host_params), ctx)
        clip_sig.update(zip(h.outputs, res))
    return BundleRun(clip_sig[manifest.graph_output], {k: torch.stack(v) for k, v in spikes.items()},
                     {k: r.runtime for k, r in runners.items()})


def _time_of(manifest: Manifest, step: dict[str, str]) -> str:
    if "partition" in step:
        return manifest.partition(step["partition"]).time
    return manifest.host_op(step["host_op"]).time


def _params(h, host_params: dict[str, Tensor]) -> dict[str, Tensor]:
    """The op's parameters by their own names: ``host_params`` keys are ``<host op name>.<param>``."""
    prefix = h.name + "."
    missing = [k for k in h.params if k not in host_params or not k.startswith(prefix)]
    if missing:
        raise VerificationError(f"host op '{h.name}' needs parameter(s) {missing[:3]} that {HOST_PARAMS_NAME} "
                                f"does not hold under the prefix '{prefix}'; re-export the bundle")
    return {k[len(prefix):]: host_params[k] for k in h.params}
