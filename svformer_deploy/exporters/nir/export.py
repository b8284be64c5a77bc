"""``--to nir``: write an SVFormer as an export bundle of NIR partitions plus declared host operations."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from svformer_deploy.exporters.bundle import HOST_PARAMS_NAME, Manifest, write_bundle
from svformer_deploy.errors import ExportError
from svformer_deploy.exporters.nir.lowering import DT, NIR_FILE_EXT, Lowered, lower_svformer, nir_graph
from svformer_deploy.exporters.plan import Plan

__all__ = ["DISCRETIZATION", "build_manifest", "export_nir", "nir_metadata"]

DISCRETIZATION: dict[str, Any] = {
    "neuron": "nir.LIF, one array entry per neuron",
    "source_neuron": "PLIF (spikingjelly 0.0.0.0.14, decay_input=True, hard reset to 0): "
                     "H[t] = V[t-1] + (X[t] - V[t-1]) / tau_plif; S[t] = H[t] >= V_th; V[t] = H[t] (1 - S[t])",
    "mapping": "tau = tau_plif * dt, r = 1, v_leak = 0, v_threshold = V_th, v_reset = 0",
    "integration": "forward Euler with step dt: v <- v + (dt / tau) ((v_leak - v) + r I), i.e. the PLIF charge step",
    "spike_condition": "NIR: v > v_threshold (strict); source model: H >= V_th. They differ only when H == V_th "
                       "exactly; verification counts such ties separately",
    "timestep": "one video frame per timestep; state starts at 0 at the first frame of every clip",
    "dt_seconds": DT,
    "edges": "several edges into one node are summed (residual streams)",
    "tokens": "token-wise Linear on the H*W tokens of a frame = 1x1 Conv2d on the (C, H, W) map",
}


def nir_metadata(manifest: Manifest, partition: str) -> dict[str, str]:
    """Graph-level metadata written into each NIR file (strings only: NIR stores them as HDF5 datasets)."""
    return {
        "producer": "svformer-deploy",
        "bundle_format": f"{manifest.format} v{manifest.format_version}",
        "partition": partition,
        "model_name": manifest.model_name,
        "config_json": json.dumps(manifest.config),
        "checkpoint_sha256": manifest.checkpoint_sha256,
        "dt": repr(manifest.dt),
        "discretization_json": json.dumps(manifest.discretization),
    }


def build_manifest(lowered: Lowered, target: str, model: nn.Module, checkpoint_sha256: str,
                   class_names: list[str] | None) -> Manifest:
    """The manifest of ``lowered``: its plan (structure only) and the graph :func:`nir_graph` derives from that
    plan, as a reader does; refused if the derived graph is not the one the partition files are written from."""
    from svformer_deploy import __version__

    config = model.config.to_dict()
    plan = Plan.from_dict(lowered.plan.to_dict())  # what a reader gets: the structure, through its JSON
    graph = nir_graph(plan, config)
    if graph != lowered.graph:
        raise ExportError("internal error: the NIR graph derived from the stored plan differs from the lowered "
                          "partitions; please report this with the checkpoint's config")
    return Manifest(
        target=target, model_name=model.config.name, config=config, checkpoint_sha256=checkpoint_sha256, dt=DT,
        discretization=dict(DISCRETIZATION), plan=plan, graph=graph, class_names=class_names,
        approximations=list(lowered.approximations), created_by=f"svformer-deploy {__version__}")


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def export_nir(model: nn.Module, out: str | os.PathLike, *, checkpoint_sha256: str, checkpoint_path: str = "",
               class_names: list[str] | None = None, approximate_bn: bool = False, force: bool = False,
               compression_level: int = 1) -> tuple[Path, Manifest]:
    """Lower ``model`` and write the bundle atomically. Returns (bundle path, manifest).

    Raises :class:`~svformer_deploy.errors.UnsupportedLayerError` for modules without a rule,
    :class:`~svformer_deploy.exporters.nir.lowering.PerTimestepBNError` for per-timestep BN without
    ``approximate_bn``, :class:`~svformer_deploy.errors.OutputExistsError` if ``out`` exists and not ``force``.
    """
    import nir

    lowered = lower_svformer(model, approximate_bn=approximate_bn)
    manifest = build_manifest(lowered, "nir", model, checkpoint_sha256, class_names)
    manifest.checkpoint_path = checkpoint_path
    writers = {}
    for part in lowered.partitions:
        graph = part.graph(nir_metadata(manifest, part.name))
        writers[part.name + NIR_FILE_EXT] = (
            lambda g: lambda p: nir.write(p, g, compression_opts=compression_level))(graph)
    if lowered.host_params:
        writers[HOST_PARAMS_NAME] = lambda p: _write_npz(p, lowered.host_params)
    return write_bundle(out, manifest, writers, force=force), manifest
