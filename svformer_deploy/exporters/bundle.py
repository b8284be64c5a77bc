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

One description of the network (format version 3):

* The manifest stores the export ``plan`` (:class:`~svformer_deploy.exporters.plan.Plan`, structure only), not
  the steps above.
* Signals, partitions, host ops and schedule are the bundle's :class:`Graph`. The target that wrote the bundle
  derives it from the plan and the config with its ``graph`` function: at export (what the partition files are
  written from) and again on every read.
* Version 2 stored both and checked one against the other; a version-2 bundle is refused with the command that
  re-exports it.

Checked, not trusted (each failure is one :class:`BundleFormatError` naming the field):

* ``integrity`` is the SHA-256 of the manifest's canonical JSON (all fields but itself, ``files`` included), so
  any hand edit of ``manifest.json`` is refused.
* Every dataclass below validates itself when built.
* The plan is parsed and checked once, on read: typed nodes, data flow, one input, every model operation
  covered by exactly one node, every host op registered.
* The derived graph checks itself once: every step exists and runs once, reads only signals the graph input or
  an earlier step produced, and the graph output is produced.
* The manifest checks that the graph covers every operation of its plan exactly once and that the class names
  fit the logits.
* ``approximations`` are :class:`Approximation` records (a registered kind with the parameters the exporter
  used), which the verifiers re-derive from the model rather than trust.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from svformer_deploy._atomic import json_text
from svformer_deploy._outputs import Output, write_output_dir
from svformer_deploy._paths import read_user_text
from svformer_deploy.errors import BundleFormatError, ExportError
from svformer_deploy.exporters.plan import TIMES, VALUE_KINDS, Kind, Plan, PlanError, Time, coverage_of, is_name

__all__ = [
    "BUNDLE_FORMAT", "BUNDLE_VERSION", "MANIFEST_NAME", "HOST_PARAMS_NAME", "VERIFICATION_NAME", "APPROXIMATION_KINDS",
    "Signal", "PartitionSpec", "HostOpSpec", "Approximation", "Graph", "GraphOf", "Manifest", "clip_signals",
    "derive_graph", "write_bundle", "read_manifest", "reexport_command",
    "check_bundle_files", "manifest_digest", "json_differences", "manifest_differences", "check_manifest_matches",
    "PROVENANCE_FIELDS", "BUNDLE_OUTPUT",
]

BUNDLE_FORMAT = "svformer-deploy-bundle"
BUNDLE_VERSION = 3
MANIFEST_NAME = "manifest.json"
HOST_PARAMS_NAME = "host_params.npz"
VERIFICATION_NAME = "verification.json"
BUNDLE_OUTPUT = Output("export", "an export bundle (svformer-deploy export)", "export", files=(MANIFEST_NAME,),
                       later=("*.json",))
"""What ``export`` writes: a whole folder; ``verify`` adds its JSON records to it later."""

_FIX = "re-export the bundle with `svformer-deploy export` instead of editing it"

APPROXIMATION_KINDS: dict[str, str] = {
    "bn_time_average": "per-timestep BatchNorm folded with its time-averaged scale and shift (params: num_frames)",
    "loihi_weight_mantissa": "weights as 8-bit mantissas with a per-layer exponent, round to nearest",
    "loihi_bias_mantissa": "biases (folded BatchNorm shift / tau) as 13-bit mantissas at the weight exponent",
    "loihi_voltage_decay": "voltage decay round(4096 / tau) / 4096, decayed voltage rounded toward zero",
    "loihi_strict_threshold": "spike condition v > threshold (strict) instead of H >= V_th",
    "loihi_clipping": "weights or biases clipped to their mantissa (params: layer, neuron, weights, biases)",
}
"""Every kind of approximation an exporter may record. A verifier accepts an ``approximate`` verdict only for
approximations whose kind is listed here *and* that it re-derives, with equal parameters, from the model."""


_BAD = "bundle manifest:"


def _bad(what: str, why: str) -> BundleFormatError:
    """A manifest field that is wrong (:func:`read_manifest` puts the manifest's path in place of ``_BAD``)."""
    return BundleFormatError(f"{_BAD} {what} {why}; {_FIX}")


def _str_map(what: str, d: Any) -> None:
    if not isinstance(d, dict) or not all(is_name(k) and is_name(v) for k, v in d.items()):
        raise _bad(what, "must map names to names")


def _names(what: str, xs: Any) -> None:
    if not isinstance(xs, list) or not all(is_name(x) for x in xs):
        raise _bad(what, "must be a list of names")


@dataclass(frozen=True)
class Signal:
    """A named tensor flowing between steps. ``shape`` excludes batch (and time); ``kind`` is ``"spikes"``
    (values in {0, 1}), ``"analog"`` (real values: frames, currents, residual streams) or ``"logits"``."""

    name: str
    shape: tuple[int, ...]
    kind: Kind
    time: Time = "per_timestep"
    layout: str = "C,H,W"

    def __post_init__(self) -> None:
        if not is_name(self.name):
            raise _bad("a signal", f"has no name ({self.name!r})")
        if not (isinstance(self.shape, tuple) and self.shape
                and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in self.shape)):
            raise _bad(f"signal '{self.name}'", f"has shape {self.shape!r}, not a tuple of positive sizes")
        if self.kind not in VALUE_KINDS:
            raise _bad(f"signal '{self.name}'", f"has kind {self.kind!r}, not one of {VALUE_KINDS}")
        if self.time not in TIMES:
            raise _bad(f"signal '{self.name}'", f"has time {self.time!r}, not one of {TIMES}")
        if not isinstance(self.layout, str) or len(self.layout.split(",")) != len(self.shape):
            raise _bad(f"signal '{self.name}'", f"has layout {self.layout!r} for shape {self.shape}")


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

    def __post_init__(self) -> None:
        if not is_name(self.name):
            raise _bad("a partition", f"has no name ({self.name!r})")
        what = f"partition '{self.name}'"
        if not is_name(self.file) or Path(self.file).name != self.file:
            raise _bad(what, f"names file {self.file!r}, not a file inside the bundle")
        _str_map(f"{what} inputs", self.inputs)
        _str_map(f"{what} outputs", self.outputs)
        if not self.outputs:
            raise _bad(what, "has no outputs")
        _names(f"{what} modules", self.modules)
        if not isinstance(self.nodes, dict) or not all(is_name(k) and isinstance(v, list)
                                                        for k, v in self.nodes.items()):
            raise _bad(f"{what} nodes", "must map node names to module lists")
        if self.time not in TIMES:
            raise _bad(what, f"has time {self.time!r}, not one of {TIMES}")


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

    def __post_init__(self) -> None:
        from svformer_deploy.exporters.host_ops import registration_problem

        if not is_name(self.name):
            raise _bad("a host op", f"has no name ({self.name!r})")
        what = f"host op '{self.name}'"
        problem = registration_problem(self.op)
        if problem:
            raise _bad(what, f"names op {problem}")
        for key in ("inputs", "outputs", "modules", "params"):
            _names(f"{what} {key}", getattr(self, key))
        if not self.outputs:
            raise _bad(what, "has no outputs")
        if not is_name(self.equation) or not isinstance(self.attrs, dict):
            raise _bad(what, "needs an equation and a dict of attrs")
        if self.time not in TIMES:
            raise _bad(what, f"has time {self.time!r}, not one of {TIMES}")


@dataclass(frozen=True)
class Approximation:
    """A departure from the source model that an exporter made on purpose: a registered ``kind``
    (:data:`APPROXIMATION_KINDS`), the ``params`` it was made with, and a sentence for the report."""

    kind: str
    text: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in APPROXIMATION_KINDS:
            raise _bad("approximation", f"{self.kind!r} is not a kind any exporter records "
                       f"(known: {', '.join(APPROXIMATION_KINDS)})")
        if not is_name(self.text) or not isinstance(self.params, dict):
            raise _bad(f"approximation {self.kind!r}", "needs a text and a dict of params")


@dataclass(frozen=True)
class Graph:
    """What a bundle computes, step by step: its signals, partitions, host ops and schedule.

    Not stored: a target derives it from the manifest's ``plan`` (and ``config``) with its ``graph`` function
    (:class:`~svformer_deploy.exporters.Exporter`), at export and again on every read, so the plan is the one
    description of the network a bundle holds. Built, it checks itself once: signals keyed by their names, step
    names unique, every signal a step uses declared, and the schedule a data flow (see the module docstring).
    """

    signals: dict[str, Signal]
    partitions: list[PartitionSpec]
    host_ops: list[HostOpSpec]
    schedule: list[dict[str, str]]
    graph_input: str
    graph_output: str

    def __post_init__(self) -> None:
        if not isinstance(self.signals, dict) or any(k != s.name for k, s in self.signals.items()):
            raise _bad("signals", "must be keyed by their own names")
        steps = {}
        for spec in [*self.partitions, *self.host_ops]:
            if spec.name in steps:
                raise _bad(f"step name '{spec.name}'", "is used twice")
            steps[spec.name] = spec
        for what, sigs in [(f"partition '{p.name}'", [*p.inputs.values(), *p.outputs.values()])
                           for p in self.partitions] + [(f"host op '{h.name}'", [*h.inputs, *h.outputs])
                                                        for h in self.host_ops]:
            for sig in sigs:
                if sig not in self.signals:
                    raise _bad(what, f"uses signal '{sig}', which the manifest does not declare")
        for key in ("graph_input", "graph_output"):
            if getattr(self, key) not in self.signals:
                raise _bad(key, f"'{getattr(self, key)}' is not a declared signal")
        self._check_schedule(steps)

    def _check_schedule(self, steps: dict) -> None:
        """Every step once; per-timestep steps before per-clip ones; inputs produced before they are read."""
        seen: set[str] = set()
        produced = {self.graph_input}
        clip_phase = False
        for i, step in enumerate(self.schedule):
            if not (isinstance(step, dict) and len(step) == 1 and next(iter(step)) in ("partition", "host_op")):
                raise _bad(f"schedule step {i}", f"is {step!r}, not {{'partition': name}} or {{'host_op': name}}")
            kind, name = next(iter(step.items()))
            spec = steps.get(name)
            if spec is None or isinstance(spec, PartitionSpec) != (kind == "partition"):
                raise _bad(f"schedule step {i}", f"names {kind} '{name}', which the manifest does not declare")
            if name in seen:
                raise _bad(f"schedule step {i}", f"runs '{name}' a second time")
            seen.add(name)
            if spec.time == "per_clip":
                clip_phase = True
            elif clip_phase:
                raise _bad(f"schedule step {i}", f"runs per-timestep '{name}' after a per-clip step")
            reads = list(spec.inputs.values()) if isinstance(spec, PartitionSpec) else list(spec.inputs)
            for sig in reads:
                if sig not in produced:
                    raise _bad(f"schedule step {i} ('{name}')", f"reads signal '{sig}' before any step produces it")
            produced |= set(spec.outputs.values() if isinstance(spec, PartitionSpec) else spec.outputs)
        if self.graph_output not in produced:
            raise _bad("graph_output", f"'{self.graph_output}' is produced by no scheduled step")
        hosted = {n for n, s in steps.items() if isinstance(s, HostOpSpec)}
        if hosted - seen:
            raise _bad("schedule", f"does not run host op(s) {sorted(hosted - seen)}")
        called: set[str] = set()
        for h in self.host_ops:
            calls = h.attrs.get("partitions", {})
            if not isinstance(calls, dict):
                raise _bad(f"host op '{h.name}' attrs.partitions", "must map partition names to their taps")
            called |= set(calls)
        parts = {p.name for p in self.partitions}
        if called - parts:
            raise _bad("host ops", f"call partition(s) {sorted(called - parts)} the manifest does not declare")
        if parts - seen - called:
            raise _bad("schedule", f"neither runs nor calls partition(s) {sorted(parts - seen - called)}")
        if seen & called:
            raise _bad("schedule", f"runs partition(s) {sorted(seen & called)} that a host op also calls")

    def covered_modules(self) -> list[str]:
        """Every module named by a partition or host op, with repetitions (a correct graph has none)."""
        return [m for p in self.partitions for m in p.modules] + [m for h in self.host_ops for m in h.modules]


def clip_signals(plan: Plan) -> dict[str, Signal]:
    """The two signals of a graph whose one step reads the whole clip: the plan's input (analog frames, per
    timestep) and its output (per-clip logits), under the names the runtimes use, ``frames`` and ``logits``."""
    return {"frames": Signal("frames", tuple(plan.input.shape), "analog"),
            "logits": Signal("logits", tuple(plan.node(plan.output).shape), "logits", time="per_clip", layout="K")}


GraphOf = Callable[[Plan, dict[str, Any]], Graph]
"""A target's graph function: the :class:`Graph` of a bundle holding ``plan`` (structure only) for ``config``."""


@dataclass
class Manifest:
    """Everything about a bundle except the weights: provenance, contract, the export plan (structure only,
    stored as its JSON and parsed, hence checked, once on read), class names, and the :class:`Graph` its target
    derives from the plan (``graph``: not stored, see :meth:`to_json`)."""

    target: str
    model_name: str
    config: dict[str, Any]
    checkpoint_sha256: str
    dt: float
    discretization: dict[str, Any]
    plan: Plan
    graph: Graph
    class_names: list[str] | None = None
    checkpoint_path: str = ""
    approximations: list[Approximation] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    created_by: str = ""
    format: str = BUNDLE_FORMAT
    format_version: int = BUNDLE_VERSION
    integrity: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`BundleFormatError` naming the first inconsistency (see the module docstring)."""
        for key in ("target", "model_name"):
            if not is_name(getattr(self, key)):
                raise _bad(key, f"is {getattr(self, key)!r}, not a name")
        if not isinstance(self.config, dict) or not isinstance(self.discretization, dict):
            raise _bad("config/discretization", "must be JSON objects")
        if not (isinstance(self.dt, (int, float)) and not isinstance(self.dt, bool) and math.isfinite(self.dt)
                and self.dt > 0):
            raise _bad("dt", f"is {self.dt!r}, not a positive number")
        if not isinstance(self.plan, Plan):
            raise _bad("plan", f"is {type(self.plan).__name__}, not an export plan")
        if self.plan.model_name != self.model_name:
            raise _bad("plan", f"is of model '{self.plan.model_name}', the manifest of '{self.model_name}'")
        if not isinstance(self.graph, Graph):
            raise _bad("graph", f"is {type(self.graph).__name__}, not the Graph its target derives from the plan")
        problems = self.coverage_problems()
        if problems:
            raise _bad("coverage", f"is broken: {'; '.join(problems[:3])}")
        out = self.signals[self.graph_output]
        if self.class_names is not None:
            if not isinstance(self.class_names, list) or not all(isinstance(c, str) for c in self.class_names):
                raise _bad("class_names", "must be a list of strings")
            if len(self.class_names) != out.shape[0]:
                raise _bad("class_names", f"has {len(self.class_names)} names for {out.shape[0]} logits")
        num_classes = self.config.get("num_classes")
        if num_classes is not None and out.shape != (num_classes,):
            raise _bad(f"graph output '{out.name}'", f"has shape {out.shape}, the config {num_classes} classes")
        size, chans = self.config.get("img_size"), self.config.get("in_chans")
        if size is not None and chans is not None and self.signals[self.graph_input].shape != (chans, size, size):
            raise _bad(f"graph input '{self.graph_input}'", f"has shape {self.signals[self.graph_input].shape}, "
                       f"the config ({chans}, {size}, {size})")
        if not isinstance(self.approximations, list) or not all(isinstance(a, Approximation)
                                                               for a in self.approximations):
            raise _bad("approximations", "must be a list of {kind, text, params} records")
        if not isinstance(self.files, dict) or not all(isinstance(v, str) for v in self.files.values()):
            raise _bad("files", "must map file names to SHA-256 digests")
        for p in self.partitions:
            if self.files and p.file not in self.files:
                raise _bad(f"partition '{p.name}'", f"file {p.file} is not listed in files")

    # the graph, read through the manifest (it is the plan's, derived by the target)
    @property
    def signals(self) -> dict[str, Signal]:
        return self.graph.signals

    @property
    def partitions(self) -> list[PartitionSpec]:
        return self.graph.partitions

    @property
    def host_ops(self) -> list[HostOpSpec]:
        return self.graph.host_ops

    @property
    def schedule(self) -> list[dict[str, str]]:
        return self.graph.schedule

    @property
    def graph_input(self) -> str:
        return self.graph.graph_input

    @property
    def graph_output(self) -> str:
        return self.graph.graph_output

    def to_json(self) -> dict[str, Any]:
        """The stored fields, as a new JSON tree (the graph is derived, so it is not among them)."""
        d = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name not in ("graph", "plan")}
        d["plan"] = self.plan.to_dict()
        d["approximations"] = [asdict(a) for a in self.approximations]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any], graph_of: GraphOf) -> "Manifest":
        """The manifest of a ``manifest.json`` whose graph ``graph_of`` (its target's) derives from its plan."""
        d = dict(d)
        try:
            unknown = set(d) - ({f.name for f in fields(cls)} - {"graph"})
            derived = sorted(unknown & {f.name for f in fields(Graph)})
            if derived:
                raise _bad(f"field(s) {derived}", f"are stored, but bundle format {BUNDLE_VERSION} derives the graph "
                           "from the plan and never stores it")
            if unknown:
                raise _bad(f"field(s) {sorted(unknown)}", f"are not part of bundle format {BUNDLE_VERSION}")
            approx = d.get("approximations", [])
            for i, a in enumerate(approx if isinstance(approx, list) else [approx]):
                if not isinstance(a, dict):
                    raise _bad(f"approximations[{i}]", f"is {a!r}, not a {{kind, text, params}} record written by an "
                               "exporter")
            d["approximations"] = [Approximation(**a) for a in approx]
            if not isinstance(d.get("config"), dict):
                raise _bad("config", "must be a JSON object")
            d["plan"] = _plan_of(d["plan"])
            d["graph"] = derive_graph(d["plan"], d["config"], graph_of)
            return cls(**d)
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            if isinstance(err, BundleFormatError):
                raise
            raise BundleFormatError(f"bundle manifest is incomplete or malformed ({type(err).__name__}: {err}); "
                                    f"{_FIX}") from err

    def partition(self, name: str) -> PartitionSpec:
        for p in self.partitions:
            if p.name == name:
                return p
        raise _bad(f"partition '{name}'", f"is not declared (partitions: {[p.name for p in self.partitions]})")

    def host_op(self, name: str) -> HostOpSpec:
        for h in self.host_ops:
            if h.name == name:
                return h
        raise _bad(f"host op '{name}'", f"is not declared (host ops: {[h.name for h in self.host_ops]})")

    @property
    def operations(self) -> list[str]:
        """The model's operations, as its export plan lists them."""
        return list(self.plan.operations)

    def coverage_problems(self, operations: list[str] | None = None) -> list[str]:
        """The invariant every bundle keeps: each of the model's ``operations`` (default: the list its export
        plan records, whose nodes cover each exactly once) is covered by exactly one partition or host op of
        the graph, and nothing else is. Empty when it holds."""
        return coverage_of(self.operations if operations is None else operations, self.graph.covered_modules())


def _plan_of(d: Any) -> Plan:
    try:
        return Plan.from_dict(d)
    except PlanError as err:
        raise _bad("plan", f"is invalid ({err})") from None


def derive_graph(plan: Plan, config: dict[str, Any], graph_of: GraphOf) -> Graph:
    """The :class:`Graph` ``graph_of`` derives from a stored ``plan`` (structure only) for ``config``; a plan
    the target cannot lower is a :class:`BundleFormatError` naming why."""
    try:
        return graph_of(plan, config)
    except (ExportError, PlanError, KeyError, ValueError, TypeError) as err:
        if isinstance(err, BundleFormatError):
            raise
        raise _bad("plan", f"cannot be lowered by its target ({type(err).__name__}: {err})") from None


PROVENANCE_FIELDS = ("created_by", "files", "integrity", "checkpoint_path", "checkpoint_sha256", "class_names")
"""Manifest fields that record where a bundle came from rather than what it computes: checked against the files
(``files``) and the checkpoint (sha256, class names), not re-derived from the model."""


def _diff(a: Any, b: Any, path: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            _diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}" if path else str(k), out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}[{i}]", out)
    elif a != b or type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        out.append(path)


def json_differences(got: Any, want: Any, root: str = "") -> list[str]:
    """Dotted paths (``plan.nodes[19].tau``) of every leaf where the JSON values ``got`` and ``want`` differ."""
    out: list[str] = []
    _diff(got, want, root, out)
    return out


def manifest_differences(got: Manifest, want: Manifest) -> list[str]:
    """Dotted paths of every field (outside :data:`PROVENANCE_FIELDS`) where ``got`` differs from ``want``, the
    manifest the exporter derives from the model now: what a verifier uses to refuse an edited bundle."""
    a, b = got.to_json(), want.to_json()
    return json_differences({k: v for k, v in a.items() if k not in PROVENANCE_FIELDS},
                            {k: v for k, v in b.items() if k not in PROVENANCE_FIELDS})


def check_manifest_matches(bundle: str | os.PathLike, got: Manifest, want: Manifest) -> None:
    """Raise one :class:`BundleFormatError` naming the first fields where ``got`` is not the manifest the exporter
    writes for this model (``want``)."""
    diff = manifest_differences(got, want)
    if diff:
        more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
        raise BundleFormatError(f"{bundle}: manifest field(s) {', '.join(diff[:3])}{more} differ from what the "
                                f"'{got.target}' exporter writes for its model; {_FIX}")


def manifest_digest(manifest_json: Mapping[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON (sorted keys, no whitespace), ``integrity`` left out."""
    body = {k: v for k, v in manifest_json.items() if k != "integrity"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bundle(out: str | os.PathLike, manifest: Manifest, writers: Mapping[str, Callable[[Path], None]],
                 force: bool = False) -> Path:
    """Write a bundle atomically: ``writers[relpath](path)`` writes each file, then ``manifest.json`` is
    written with the SHA-256 of every file in ``manifest.files`` and its own :func:`manifest_digest`."""

    def build(tmp: Path) -> None:
        for rel, write in writers.items():
            write(tmp / rel)
        manifest.files = {rel: _sha256(tmp / rel) for rel in sorted(writers)}
        manifest.validate()
        d = manifest.to_json()
        manifest.integrity = d["integrity"] = manifest_digest(d)
        (tmp / MANIFEST_NAME).write_text(json_text(d, indent=1), encoding="utf-8")

    return write_output_dir(out, build, BUNDLE_OUTPUT, force=force)


def read_manifest(bundle: str | os.PathLike, graph_of: Callable[[str], GraphOf]) -> Manifest:
    """Read ``bundle/manifest.json`` and check it: format name and version, the integrity digest, every stored
    field (see the module docstring), then derive its graph with ``graph_of(target)``. Any failure is one
    :class:`BundleFormatError`. (:func:`svformer_deploy.exporters.read_bundle` passes the target registry's
    graph functions.)"""
    path = Path(bundle) / MANIFEST_NAME
    if not Path(bundle).is_dir():
        problem = "is a file, not a bundle folder" if Path(bundle).exists() else "does not exist"
        raise BundleFormatError(f"export bundle {bundle} {problem}; pass the directory written by "
                                "`svformer-deploy export`")
    if not path.is_file():
        raise BundleFormatError(f"{bundle} is not an export bundle (no {MANIFEST_NAME}); pass the directory "
                                "written by `svformer-deploy export`")
    try:
        d = json.loads(read_user_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleFormatError(f"{path} is not valid JSON ({err}); the bundle is damaged: re-export it") from err
    if not isinstance(d, dict) or d.get("format") != BUNDLE_FORMAT:
        got = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise BundleFormatError(f"{path} is not an svformer-deploy bundle manifest (format={got!r})")
    version = d.get("format_version")
    if type(version) is not int or version != BUNDLE_VERSION:
        if "format_version" not in d:
            what = "has no format_version"
        elif type(version) is not int:
            what = f"has format_version {version!r}, not a whole number"
        else:
            what = f"has bundle format version {version}"
        raise BundleFormatError(f"{bundle} {what}; this svformer-deploy reads version {BUNDLE_VERSION} only: "
                                f"{reexport_command(d, bundle)}")
    if d.get("integrity") != manifest_digest(d):
        raise BundleFormatError(f"{path} was edited after export (its integrity digest does not match its "
                                f"content); {_FIX}")
    try:
        if not is_name(d.get("target")):
            raise _bad("target", f"is {d.get('target')!r}, not a name")
        return Manifest.from_json(d, graph_of(d["target"]))
    except BundleFormatError as err:
        msg = str(err)
        raise BundleFormatError(f"{path}:{msg[len(_BAD):]}" if msg.startswith(_BAD) else msg) from None


def reexport_command(d: Any, bundle: str | os.PathLike) -> str:
    """The fix for a bundle this version cannot read: the export command for the checkpoint and target its
    manifest ``d`` records (placeholders where it records neither)."""
    import shlex

    ckpt = d.get("checkpoint_path") if isinstance(d, dict) else None
    target = d.get("target") if isinstance(d, dict) else None
    if isinstance(ckpt, str) and ckpt and is_name(target):
        return (f"re-export it from its checkpoint: `svformer-deploy export {shlex.quote(ckpt)} --to {target} "
                f"--out {shlex.quote(str(bundle))} --force`")
    return "re-export it from its checkpoint with `svformer-deploy export CHECKPOINT --to TARGET --out DIR`"


def check_bundle_files(bundle: str | os.PathLike, manifest: Manifest) -> None:
    """Raise :class:`BundleFormatError` if a listed file is missing or its SHA-256 differs from the manifest."""
    for rel, digest in manifest.files.items():
        path = Path(bundle) / rel
        if not path.is_file():
            raise BundleFormatError(f"bundle file {path} is missing; the bundle is incomplete: re-export it")
        if _sha256(path) != digest:
            raise BundleFormatError(f"bundle file {path} does not match the SHA-256 in the manifest; it was "
                                    "modified after export: re-export the bundle")
