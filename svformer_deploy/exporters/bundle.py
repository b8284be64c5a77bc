"""The export bundle: a versioned directory that holds a whole model, split into neuromorphic partitions and
declared host operations, plus everything needed to rebuild, run and check it.

Layout (format :data:`BUNDLE_FORMAT`, version :data:`BUNDLE_VERSION`)::

    bundle/
      manifest.json            this module's :class:`Manifest`, as JSON
      <partition>.nir          one file per neuromorphic partition (NIR HDF5; other targets: their own format)
      host_params.npz          weights of host operations (plain arrays; read with allow_pickle=False)
      verification.json        written by ``verify`` (not listed in ``files``: it is a result, not an input)

Execution contract (what a runtime must do with a bundle):

* Signals are named tensors. Every step of ``schedule`` reads signals and writes signals.
* Steps with ``time == "per_timestep"`` run once per timestep t = 0..T-1, in schedule order, on the
  frame-t slice of their inputs (shape (B, *signal.shape)); their outputs are stacked along a leading time axis.
* Steps with ``time == "per_clip"`` run once, after all timesteps, on stacked (T, B, *shape) inputs.
* A partition's ``inputs`` map one of its NIR ``Input`` node names to the signal it reads; ``outputs``
  map ``Output`` node names to the signal they produce. Several edges into one node (``Output`` included)
  are summed -- that is how residual streams are expressed.
* Neuron state starts at 0 at the first timestep of every clip.

Every module of the source model is named in exactly one partition's or host op's ``modules`` list.
Writes are atomic: the bundle is built in a temporary directory next to the target and renamed onto it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from svformer_deploy._atomic import atomic_write_dir
from svformer_deploy.errors import BundleFormatError

__all__ = [
    "BUNDLE_FORMAT", "BUNDLE_VERSION", "MANIFEST_NAME", "HOST_PARAMS_NAME", "VERIFICATION_NAME",
    "Signal", "PartitionSpec", "HostOpSpec", "Manifest", "write_bundle", "read_manifest", "check_bundle_files",
    "atomic_write_dir",
]

BUNDLE_FORMAT = "svformer-deploy-bundle"
BUNDLE_VERSION = 1
MANIFEST_NAME = "manifest.json"
HOST_PARAMS_NAME = "host_params.npz"
VERIFICATION_NAME = "verification.json"

Time = Literal["per_timestep", "per_clip"]


@dataclass(frozen=True)
class Signal:
    """A named tensor flowing between steps. ``shape`` excludes batch (and time); ``kind`` is ``"spikes"``
    (values in {0, 1}), ``"analog"`` (real values: frames, currents, residual streams) or ``"logits"``."""

    name: str
    shape: tuple[int, ...]
    kind: Literal["spikes", "analog", "logits"]
    time: Time = "per_timestep"
    layout: str = "C,H,W"


@dataclass(frozen=True)
class PartitionSpec:
    """A neuromorphic partition: one file, its Input/Output nodes bound to signals, the modules it covers.

    ``nodes`` maps each node name in the file to the dotted module names it was built from (a composed conv
    names several modules; a folded BatchNorm is listed with its conv).
    """

    name: str
    file: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    modules: list[str]
    nodes: dict[str, list[str]] = field(default_factory=dict)
    time: Time = "per_timestep"


@dataclass(frozen=True)
class HostOpSpec:
    """An operation the neuromorphic format cannot express, run by the host.

    ``op`` names an entry of the host-op registry (see ``svformer_deploy.exporters.host_ops``); ``attrs`` are
    its JSON attributes; ``params`` are keys of arrays in ``host_params.npz``; ``equation`` states what it
    computes, so a runtime without our code can implement it.
    """

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    modules: list[str]
    equation: str
    attrs: dict[str, Any] = field(default_factory=dict)
    params: list[str] = field(default_factory=list)
    time: Time = "per_timestep"


@dataclass
class Manifest:
    """Everything about a bundle except the weights: provenance, contract, signals, steps, class names."""

    target: str
    model_name: str
    config: dict[str, Any]
    checkpoint_sha256: str
    dt: float
    discretization: dict[str, Any]
    signals: dict[str, Signal]
    partitions: list[PartitionSpec]
    host_ops: list[HostOpSpec]
    schedule: list[dict[str, str]]
    graph_input: str
    graph_output: str
    class_names: list[str] | None = None
    checkpoint_path: str = ""
    approximations: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    created_by: str = ""
    format: str = BUNDLE_FORMAT
    format_version: int = BUNDLE_VERSION

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["signals"] = {k: {**asdict(v), "shape": list(v.shape)} for k, v in self.signals.items()}
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Manifest":
        d = dict(d)
        try:
            d["signals"] = {k: Signal(**{**v, "shape": tuple(v["shape"])}) for k, v in d["signals"].items()}
            d["partitions"] = [PartitionSpec(**p) for p in d["partitions"]]
            d["host_ops"] = [HostOpSpec(**h) for h in d["host_ops"]]
            return cls(**d)
        except (KeyError, TypeError) as err:
            raise BundleFormatError(f"bundle manifest is incomplete or malformed ({err}); re-export the bundle "
                                    "with this version of svformer-deploy") from err

    def partition(self, name: str) -> PartitionSpec:
        return next(p for p in self.partitions if p.name == name)

    def host_op(self, name: str) -> HostOpSpec:
        return next(h for h in self.host_ops if h.name == name)

    def covered_modules(self) -> list[str]:
        """Every module named by a partition or host op, with repetitions (a correct bundle has none)."""
        return [m for p in self.partitions for m in p.modules] + [m for h in self.host_ops for m in h.modules]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bundle(out: str | os.PathLike, manifest: Manifest, writers: Mapping[str, Callable[[Path], None]],
                 force: bool = False) -> Path:
    """Write a bundle atomically: ``writers[relpath](path)`` writes each file, then ``manifest.json`` is
    written with the SHA-256 of every file in ``manifest.files``."""

    def build(tmp: Path) -> None:
        for rel, write in writers.items():
            write(tmp / rel)
        manifest.files = {rel: _sha256(tmp / rel) for rel in sorted(writers)}
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest.to_json(), indent=1))

    return atomic_write_dir(out, build, force=force)


def read_manifest(bundle: str | os.PathLike) -> Manifest:
    """Read and validate ``bundle/manifest.json`` (format name and version)."""
    path = Path(bundle) / MANIFEST_NAME
    if not path.is_file():
        raise BundleFormatError(f"{bundle} is not an export bundle (no {MANIFEST_NAME}); pass the directory "
                                "written by `svformer-deploy export`")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BundleFormatError(f"{path} is not valid JSON ({err}); the bundle is damaged: re-export it") from err
    if d.get("format") != BUNDLE_FORMAT:
        raise BundleFormatError(f"{path} is not an svformer-deploy bundle manifest (format={d.get('format')!r})")
    if d.get("format_version") != BUNDLE_VERSION:
        raise BundleFormatError(f"{bundle} has bundle format version {d.get('format_version')}; this "
                                f"svformer-deploy reads version {BUNDLE_VERSION}: re-export or upgrade")
    return Manifest.from_json(d)


def check_bundle_files(bundle: str | os.PathLike, manifest: Manifest) -> None:
    """Raise :class:`BundleFormatError` if a listed file is missing or its SHA-256 differs from the manifest."""
    for rel, digest in manifest.files.items():
        path = Path(bundle) / rel
        if not path.is_file():
            raise BundleFormatError(f"bundle file {path} is missing; the bundle is incomplete: re-export it")
        if _sha256(path) != digest:
            raise BundleFormatError(f"bundle file {path} does not match the SHA-256 in the manifest; it was "
                                    "modified after export: re-export the bundle")
