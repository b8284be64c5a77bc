"""``export --to lava``: an export bundle (see :mod:`svformer_deploy.exporters.bundle`) whose partitions are
netx HDF5 files for Lava-DL and whose host operation is the rest of the SVFormer in float.

Bundle contents: ``<partition>.net`` (one netx chain each), ``host_params.npz`` (the float model's state dict:
the host part and the reference the partitions were quantised from), ``lava_runner.py`` (the standalone runner,
so the bundle runs in a Lava environment without svformer-deploy) and ``manifest.json``.

Execution contract of a Lava bundle: the host op ``host`` (op ``svformer_float_host`` of the shared host-op
registry, so :func:`~svformer_deploy.exporters.runtime.run_bundle` runs it) runs ``SVFormer.forward`` in float on
the clip and, at each neuron layer a partition of its ``attrs["partitions"]`` produces, uses that partition's
spikes instead of the float PLIF; a partition's input is the spikes of its source neuron layer (in (C, H, W)
layout, one frame per timestep). The partitions are not scheduled on their own: the host op calls them.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
from torch import nn

from svformer_deploy.errors import ExportError
from svformer_deploy.exporters.bundle import (HOST_PARAMS_NAME, Approximation, Graph, HostOpSpec, Manifest,
                                              PartitionSpec, Signal, clip_signals, write_bundle)
from svformer_deploy.exporters.lava.netx import NETX_FORMAT, NETX_FORMAT_VERSION, write_netx
from svformer_deploy.exporters.lava.partition import (Partition, Tap, partition_model, partition_taps, plan_chains,
                                                      quantize_partition)
from svformer_deploy.exporters.lava.quantize import LoihiOverflowWarning
from svformer_deploy.exporters.plan import Plan

__all__ = ["export_lava", "DISCRETIZATION", "RUNNER_NAME", "HOST_PREFIX", "partition_file", "tap_signal",
           "lava_approximations", "lava_graph", "lava_manifest", "host_state_keys"]

RUNNER_NAME = "lava_runner.py"

DISCRETIZATION = {
    "source_neuron": "PLIF (spikingjelly 0.0.0.0.14, decay_input=True, hard reset to 0): "
                     "H[t] = V[t-1] + (X[t] - V[t-1]) / tau; S[t] = H[t] >= V_th; V[t] = H[t] (1 - S[t])",
    "target_neuron": "Lava CUBA LIF, fixed_pt (PyLifModelBitAcc): u = rtz(u (4096 - (du + 1))) + (a << 6) "
                     "(24-bit wrap); v = clip(rtz(v (4096 - dv)) + u + (bias << 6), +-(2^23 - 1)); "
                     "S = v > (vThMant << 6); v = 0 where S; rtz(x) = sign(x) (|x| >> 12)",
    "mapping": "iDecay = 4096 (du = 4095: no current state); vDecay = round(4096 / tau); weights and bias scaled "
               "by 1 / (tau V_th) and by 2^e: 8-bit weight mantissas in [-128, 127], 13-bit bias mantissas, "
               "per-layer exponent e with vThMant = 2^e",
    "spike_condition": "Loihi: v > vThMant << 6 (strict); source model: H >= V_th",
    "timestep": "one video frame per timestep; state starts at 0 at the first frame of every clip; in Lava each "
                "synapse delays by one step, so an L-layer partition's output for frame t is at step t + L, and "
                "netx's reset schedule (reset_offset=1) zeroes layer l just before its first input",
    "tokens": "token-wise Linear on the H*W tokens of a frame = 1x1 conv on the (C, H, W) map",
}


def partition_file(name: str) -> str:
    """File name of a partition's netx file (dots kept, other characters replaced)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".net"


def tap_signal(tap: Tap) -> str:
    """Signal name of a tap: the neuron's dotted name, with ``[a:b]`` for a channel slice."""
    return tap.neuron + (f"[{tap.channels[0]}:{tap.channels[1]}]" if tap.channels else "")


def lava_approximations(config: dict, qparts: list[Partition]) -> list[Approximation]:
    """What a Lava export departs from the float model by, with parameters: re-derived by the verifier from the
    config and the quantised layers read back from the netx files, so an edited list is refused."""
    out = []
    if config.get("bn") == "per_timestep":
        out.append(Approximation("bn_time_average", "per-timestep BatchNorm folded with its time-averaged scale and "
                                 "shift", {"num_frames": int(config["num_frames"])}))
    out += [
        Approximation("loihi_weight_mantissa", "weights: 8-bit mantissas with a per-layer exponent (round to "
                      "nearest), see each layer's weight_exponent"),
        Approximation("loihi_bias_mantissa", "biases (folded BatchNorm shift / tau): 13-bit mantissas at the same "
                      "exponent"),
        Approximation("loihi_voltage_decay", "voltage decay quantised to round(4096 / tau) / 4096; rounding toward "
                      "zero of the decayed voltage"),
        Approximation("loihi_strict_threshold", "spike condition v > threshold (strict) instead of H >= V_th"),
    ]
    out += [Approximation("loihi_clipping", f"{l.name} -> {l.neuron}: {l.clipped_weights:.4%} weights, "
                          f"{l.clipped_biases:.4%} biases clipped",
                          {"layer": l.name, "neuron": l.neuron, "weights": l.clipped_weights,
                           "biases": l.clipped_biases})
            for p in qparts for l in p.layers if l.clipped_weights or l.clipped_biases]
    return out


HOST_PREFIX = "host."
"""Prefix of the float state dict's keys in ``host_params.npz`` (the host op's parameters)."""


def host_state_keys(config: dict) -> list[str]:
    """The keys of the float state dict the host op loads: those of the model ``config`` builds, sorted. Built
    once per config and process (0.12 s for svformer_ucf101; export, read and re-derivation all ask for them),
    under a forked RNG, so reading a bundle leaves torch's random state as it was."""
    return list(_state_keys(json.dumps(config, sort_keys=True)))


@functools.lru_cache(maxsize=8)
def _state_keys(config_json: str) -> tuple[str, ...]:
    import torch

    from svformer_deploy.models import SVFormerConfig, create_model

    with torch.random.fork_rng(devices=[]):
        return tuple(sorted(create_model(SVFormerConfig.from_dict(json.loads(config_json))).state_dict()))


def lava_graph(plan: Plan, config: dict) -> Graph:
    """The graph of a Lava bundle holding ``plan`` (structure only): one netx partition per chain of the plan
    (:func:`~svformer_deploy.exporters.lava.partition.plan_chains`), called by the one host op ``host``."""
    from svformer_deploy.exporters.lava.partition import LAVA_CAPABILITIES
    from svformer_deploy.exporters.plan import cut, partition_coverage

    chains = plan_chains(plan)
    covers = {cp.name: partition_coverage(plan, cp) for cp in cut(plan, LAVA_CAPABILITIES)}
    signals = clip_signals(plan)
    specs, claimed = [], set()
    for c in chains:
        for tap in (c.source, *c.taps):
            signals[tap_signal(tap)] = Signal(tap_signal(tap), tuple(tap.shape), "spikes")
        nodes = {f"layer/{i + 1}": [*layer.sources, layer.neuron] for i, layer in enumerate(c.layers)}
        mine = covers.get(c.name, [])
        claimed |= set(mine)
        specs.append(PartitionSpec(c.name, partition_file(c.name), {"input": tap_signal(c.source)},
                                   {"output": tap_signal(c.output)}, list(mine), nodes))
    rest = [op for op in plan.operations if op not in claimed]
    host = HostOpSpec(
        name="host", op="svformer_float_host", inputs=["frames"], outputs=["logits"], modules=rest, time="per_clip",
        equation="logits = SVFormer.forward(frames) in float32 with the host_params.npz state dict, where the "
                 "output of every neuron layer a partition of attrs['partitions'] produces is replaced by that "
                 "partition's spikes (run on the spikes of the partition's source neuron layer)",
        attrs={"partitions": partition_taps(chains)}, params=[HOST_PREFIX + k for k in host_state_keys(config)])
    return Graph(signals, specs, [host], [{"host_op": "host"}], "frames", "logits")


def lava_manifest(model: nn.Module, qparts: list[Partition], checkpoint_sha256: str, class_names) -> Manifest:
    """The manifest of a Lava bundle (written at export, re-derived by the verifier to refuse edited ones): the
    model's plan, the graph :func:`lava_graph` derives from it, the approximations of the quantised layers."""
    from svformer_deploy import __version__
    from svformer_deploy.exporters.plan import lower

    cfg = model.config
    plan = lower(model, approximate_bn=True, with_params=False)  # the structure: BN folding keeps it
    return Manifest(
        target="lava", model_name=cfg.name, config=cfg.to_dict(), checkpoint_sha256=checkpoint_sha256, dt=1.0,
        discretization={**DISCRETIZATION, "netx_format": f"{NETX_FORMAT} v{NETX_FORMAT_VERSION}"},
        plan=plan, graph=lava_graph(plan, cfg.to_dict()), class_names=class_names,
        approximations=lava_approximations(cfg.to_dict(), qparts), created_by=f"svformer-deploy {__version__}")


def export_lava(model: nn.Module, out: str | os.PathLike, *, checkpoint_sha256: str, checkpoint_path: str = "",
                class_names: list[str] | None = None, force: bool = False, approximate_bn: bool = False,
                exponent: int | None = None) -> tuple[Path, Manifest, list[Partition]]:
    """Partition, quantise and write a Lava bundle atomically. Returns (bundle path, manifest, quantised partitions).

    Raises :class:`~svformer_deploy.errors.UnsupportedLayerError` for a module netx cannot express (named),
    :class:`~svformer_deploy.errors.OutputExistsError` if ``out`` exists and not ``force``. Weights or biases
    that overflow their mantissa are clipped with a :class:`LoihiOverflowWarning` per layer.
    """
    model = model.eval()
    parts = partition_model(model, approximate_bn)
    with warnings.catch_warnings():
        warnings.simplefilter("always", LoihiOverflowWarning)
        qparts = [quantize_partition(p, exponent) for p in parts]
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    manifest = lava_manifest(model, qparts, checkpoint_sha256, class_names)
    if manifest.host_ops[0].params != [HOST_PREFIX + k for k in sorted(state)]:
        raise ExportError("internal error: the model's state dict keys are not those its config builds; "
                          "please report this with the checkpoint's config")
    manifest.checkpoint_path = checkpoint_path
    meta = {"model_name": manifest.model_name, "checkpoint_sha256": checkpoint_sha256}
    writers = {partition_file(p.name): (lambda p: lambda path: write_netx(
        path, p.layers, {**meta, "partition": p.name, "source": p.source.to_dict(),
                         "outputs": [t.to_dict() for t in p.taps]}))(p) for p in qparts}

    def write_state(path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, **{HOST_PREFIX + k: v for k, v in state.items()})

    writers[HOST_PARAMS_NAME] = write_state
    writers[RUNNER_NAME] = lambda path: shutil.copyfile(Path(__file__).with_name("runner.py"), path)
    return write_bundle(out, manifest, writers, force=force), manifest, qparts
