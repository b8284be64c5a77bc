"""Write (and read back) Lava-DL netx HDF5 files for a chain of quantised conv layers.

Layout (what ``lava.lib.dl.netx.hdf5.Network`` 0.6 loads; slayer's ``export_hdf5`` conventions)::

    /layer/0   type='input'  shape=(C, H, W)                 no neuron: input spikes go straight to layer 1's synapse
    /layer/i   type='conv'   shape=(C_out, H_out, W_out)
               weight (C_out, C_in/groups, kH, kW) float32 holding the integer mantissas (PyTorch layout; netx
               flips and transposes it to Lava's (C_out, W, H, C_in) and back, so the net effect is PyTorch's)
               bias (C_out,)  stride, padding, dilation (H, W)  groups
               neuron/ type='CUBA' iDecay vDecay vThMant refDelay gradedSpike
    root attribute 'svformer_deploy' = JSON metadata (format, version, partition name, neuron names, ...)

netx keeps shapes as (x, y, f) = (W, H, C) internally; files hold (C, H, W) like slayer's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from svformer_deploy.exporters.lava.quantize import LoihiLayer
from svformer_deploy.models.checkpoint import atomic_write

__all__ = ["write_netx", "read_netx", "NETX_FORMAT", "NETX_FORMAT_VERSION"]

NETX_FORMAT = "svformer-deploy/lava-netx"
NETX_FORMAT_VERSION = 1


def _string(group, name: str, value: str) -> None:
    group.create_dataset(name, (1,), "S10", [value.encode("ascii")])


def write_netx(path: str | os.PathLike, layers: Sequence[LoihiLayer], metadata: dict[str, Any] | None = None) -> Path:
    """Write ``layers`` (a chain; each layer's input is the previous layer's output) as one netx file, atomically."""
    import h5py

    if not layers:
        raise ValueError("a netx chain needs at least one layer")
    for prev, nxt in zip(layers, layers[1:]):
        if tuple(prev.out_shape) != tuple(nxt.in_shape):
            raise ValueError(f"chain break: {prev.name} outputs {prev.out_shape}, {nxt.name} expects {nxt.in_shape}")
    meta = {"format": NETX_FORMAT, "version": NETX_FORMAT_VERSION, **(metadata or {}),
            "layers": [layer.summary() for layer in layers]}

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            f.attrs["svformer_deploy"] = json.dumps(meta)
            g = f.create_group("layer/0")
            _string(g, "type", "input")
            g.create_dataset("shape", data=np.asarray(layers[0].in_shape, dtype=np.int64))
            for i, layer in enumerate(layers, start=1):
                g = f.create_group(f"layer/{i}")
                _string(g, "type", "conv")
                g.create_dataset("shape", data=np.asarray(layer.out_shape, dtype=np.int64))
                g.create_dataset("weight", data=layer.weight.astype(np.float32))
                g.create_dataset("bias", data=layer.bias.astype(np.float32))
                g.create_dataset("stride", data=np.asarray(layer.stride, dtype=np.int64))
                g.create_dataset("padding", data=np.asarray(layer.padding, dtype=np.int64))
                g.create_dataset("dilation", data=np.asarray([1, 1], dtype=np.int64))
                g.create_dataset("groups", data=np.int64(layer.groups))
                n = g.create_group("neuron")
                _string(n, "type", "CUBA")
                n.create_dataset("iDecay", data=np.int64(layer.i_decay))
                n.create_dataset("vDecay", data=np.int64(layer.v_decay))
                n.create_dataset("vThMant", data=np.int64(layer.vth_mant))
                n.create_dataset("refDelay", data=np.int64(1))
                n.create_dataset("gradedSpike", data=False)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; an export is meant to be shared

    return atomic_write(path, write)


def read_netx(path: str | os.PathLike) -> tuple[list[LoihiLayer], dict[str, Any]]:
    """Read a file written by :func:`write_netx` back into layers (the integers as stored) and its metadata."""
    import h5py

    from svformer_deploy.errors import ExportError

    with h5py.File(path, "r") as f:
        meta = json.loads(f.attrs.get("svformer_deploy", "{}"))
        if meta.get("format") != NETX_FORMAT:
            raise ExportError(f"{path}: not a netx file written by svformer-deploy (no '{NETX_FORMAT}' metadata)")
        if meta.get("version", 0) > NETX_FORMAT_VERSION:
            raise ExportError(f"{path}: netx format version {meta['version']} is newer than this svformer-deploy "
                              f"({NETX_FORMAT_VERSION}); upgrade svformer-deploy")
        n = len(f["layer"])
        in_shape = tuple(int(x) for x in f["layer/0/shape"][()])
        layers = []
        for i in range(1, n):
            g = f[f"layer/{i}"]
            info = meta["layers"][i - 1]
            layer = LoihiLayer(
                name=info["name"], neuron=info["neuron"],
                weight=np.asarray(g["weight"][()]).astype(np.int64), bias=np.asarray(g["bias"][()]).astype(np.int64),
                stride=tuple(int(x) for x in g["stride"][()]), padding=tuple(int(x) for x in g["padding"][()]),
                groups=int(g["groups"][()]), exponent=int(np.log2(int(g["neuron/vThMant"][()]))),
                v_decay=int(g["neuron/vDecay"][()]), in_shape=in_shape,
                out_shape=tuple(int(x) for x in g["shape"][()]), tau=float(info["tau"]),
                clipped_weights=float(info["clipped_weight_fraction"]),
                clipped_biases=float(info["clipped_bias_fraction"]), sources=tuple(info["sources"]),
                i_decay=int(g["neuron/iDecay"][()]))
            layers.append(layer)
            in_shape = layer.out_shape
    return layers, meta
