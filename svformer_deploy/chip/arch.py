"""Chip descriptions: a neuromorphic chip's mesh, cores, limits, number format and per-event costs.

A chip is read from an architecture file in SANA-FE's YAML format (``architecture:`` with ``tile``/``core``
sections, the format of ``sanafe.load_arch``), so a user's own SANA-FE file works as it is. What SANA-FE does not
model travels in the same file, where SANA-FE ignores it:

* per-core limits as extra core attributes: ``max_axons_in`` (distinct presynaptic neurons a core can receive
  from), ``max_axons_out`` (output axons: one per (neuron, destination core) pair), ``max_synapse_memory_bits``;
* a top-level ``svformer_deploy:`` section: ``name``, ``sources``, ``caveats``, ``pre_silicon``,
  ``energy_published`` (False: no per-event figures with a public source, so no time, energy or power is printed
  under the chip's name), ``number_format`` (weight/bias/threshold/state/decay bits), ``host_currents`` (whether
  the host may write a compartment's input current each timestep), ``inter_chip`` hop costs, ``leak``.

A limit that a file does not state is not checked, and every report says which limits were checked.

Event costs follow SANA-FE's pipeline exactly (``sanafe::PipelineUnit`` defaults): every neuron of a core is
*accessed* every timestep; it is *updated* when its potential or its input current or its bias is non-zero; a
*spike out* when it fires; every synaptic event costs the synapse unit's ``energy_process_spike`` (and the
dendrite's ``energy_update``); every message costs ``energy_message_out`` at the sender and ``energy_message_in``
at the receiver, and each mesh hop its direction's ``energy_*_hop``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from svformer_deploy.errors import ConfigError

__all__ = ["CHIP_DIR", "ChipSpec", "EventCosts", "Limits", "NumberFormat", "list_chips", "load_chip"]

CHIP_DIR = "chips"
"""Package folder (``svformer_deploy/chip/chips``) of the registered chips, one SANA-FE file each."""

_RANGE = re.compile(r"^(?P<base>.*)\[(?P<lo>\d+)\.\.(?P<hi>\d+)\]$")


def _expand(name: str) -> list[str]:
    """SANA-FE's replicated names: ``loihi_core[0..3]`` -> 4 names; a plain name -> itself."""
    m = _RANGE.match(name)
    if not m:
        return [name]
    lo, hi = int(m["lo"]), int(m["hi"])
    return [f"{m['base']}[{i}]" for i in range(lo, hi + 1)]


@dataclass(frozen=True)
class NumberFormat:
    """Fixed-point format of a core (Loihi's, as in Lava's bit-accurate models, unless the file says otherwise).

    Weights are signed ``weight_bits`` mantissas scaled by ``2^e`` per layer (``0 <= e <= weight_exponent_max``),
    biases signed ``bias_bits`` mantissas at the same scale (a bias exponent of up to ``bias_exponent_max`` scales
    the currents the host writes: ``mant << exp``), the threshold ``2^e`` (``threshold_bits`` unsigned), voltage and
    current ``state_bits`` signed, decays ``decay_bits`` fractions of ``2^decay_bits``."""

    weight_bits: int = 8
    weight_exponent_max: int = 16
    bias_bits: int = 13
    bias_exponent_max: int = 7
    threshold_bits: int = 17
    state_bits: int = 24
    decay_bits: int = 12
    synapse_bits: int | None = None
    """Bits one stored synapse takes in synaptic memory (None: ``weight_bits``; TrueNorth's crossbar: 1)."""
    stated: bool = True

    @property
    def bits_per_synapse(self) -> int:
        return self.weight_bits if self.synapse_bits is None else self.synapse_bits

    @property
    def weight_range(self) -> tuple[int, int]:
        return -(1 << (self.weight_bits - 1)), (1 << (self.weight_bits - 1)) - 1

    @property
    def bias_range(self) -> tuple[int, int]:
        return -(1 << (self.bias_bits - 1)), (1 << (self.bias_bits - 1)) - 1


@dataclass(frozen=True)
class Limits:
    """Per-core limits (None: not stated by the chip file, not checked)."""

    neurons: int | None
    axons_in: int | None
    axons_out: int | None
    synapse_memory_bits: int | None
    distinct_weights_per_neuron: int | None = None


@dataclass(frozen=True)
class EventCosts:
    """Per-event energy (J) and latency (s) of one core's pipeline, read from the chip file (SANA-FE's names)."""

    access_neuron: tuple[float, float]
    update_neuron: tuple[float, float]
    spike_out: tuple[float, float]
    synapse: tuple[float, float]
    dendrite: tuple[float, float]
    message_in: tuple[float, float]
    message_out: tuple[float, float]
    hop_east: tuple[float, float]
    hop_west: tuple[float, float]
    hop_north: tuple[float, float]
    hop_south: tuple[float, float]
    sync: tuple[tuple[int, float], ...]
    """SANA-FE's barrier-sync table: (mapped tiles, latency s); the entry with the largest key <= the mapped tiles
    applies (``sync_model: table``), or one fixed latency (``sync_model: fixed``)."""

    def sync_latency(self, mapped_tiles: int) -> float:
        value = self.sync[0][1]
        for key, lat in self.sync:
            if key <= mapped_tiles:
                value = lat
        return value


@dataclass(frozen=True)
class ChipSpec:
    """One chip: a ``mesh_width x mesh_height`` mesh of tiles with ``cores_per_tile`` cores each.

    Tile ``i`` sits at ``x = i // mesh_height``, ``y = i % mesh_height`` (SANA-FE's numbering); a message from
    tile a to tile b takes ``|xa - xb|`` east/west and ``|ya - yb|`` north/south hops (x growing = east,
    y growing = north). Several chips tile into one larger mesh, chips side by side along x (``chips_x`` per row).
    """

    name: str
    title: str
    path: str
    mesh_width: int
    mesh_height: int
    cores_per_tile: int
    limits: Limits
    number_format: NumberFormat
    costs: EventCosts
    neuron_model: str
    host_currents: bool
    energy_published: bool
    pre_silicon: bool
    sources: dict[str, str] = field(default_factory=dict)
    caveats: tuple[str, ...] = ()
    inter_chip_hop: tuple[float | None, float | None] = (None, None)
    soma_unit: str = ""
    input_unit: str = ""
    synapse_unit: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def tiles(self) -> int:
        return self.mesh_width * self.mesh_height

    @property
    def cores(self) -> int:
        return self.tiles * self.cores_per_tile

    def tile_xy(self, tile: int) -> tuple[int, int]:
        return tile // self.mesh_height, tile % self.mesh_height

    def checked_limits(self) -> list[str]:
        """Names of the limits this chip states (and the mapping therefore checks)."""
        lim = self.limits
        names = {"neurons per core": lim.neurons, "input axons per core": lim.axons_in,
                 "output axons per core": lim.axons_out, "synaptic memory per core": lim.synapse_memory_bits,
                 "distinct weights per neuron": lim.distinct_weights_per_neuron}
        return [k for k, v in names.items() if v is not None]


def list_chips() -> list[str]:
    """Names of the registered chips (files in ``svformer_deploy/chip/chips``)."""
    root = resources.files("svformer_deploy.chip").joinpath(CHIP_DIR)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _num(d: dict, key: str, what: str, path: str) -> float:
    if key not in d:
        raise ConfigError(f"chip file {path}: {what} has no '{key}'; add it (SANA-FE's attribute name)")
    try:
        v = float(d[key])
    except (TypeError, ValueError):
        raise ConfigError(f"chip file {path}: {what} '{key}' is {d[key]!r}, not a number") from None
    if not math.isfinite(v) or v < 0:
        raise ConfigError(f"chip file {path}: {what} '{key}' is {v}, not a finite value >= 0")
    return v


def _pair(d: dict, what: str, energy: str, latency: str, path: str) -> tuple[float, float]:
    return _num(d, energy, what, path), _num(d, latency, what, path)


def _optional_int(d: dict, key: str, path: str) -> int | None:
    if d.get(key) is None:
        return None
    try:
        v = int(d[key])
    except (TypeError, ValueError):
        raise ConfigError(f"chip file {path}: core attribute '{key}' is {d[key]!r}, not an integer") from None
    if v < 1:
        raise ConfigError(f"chip file {path}: core attribute '{key}' is {v}; it must be >= 1")
    return v


def _unit(core: dict, section: str, path: str, prefer_model: str | None = None, avoid_model: str | None = None
          ) -> tuple[str, dict]:
    units = core.get(section) or []
    if not isinstance(units, list) or not units:
        raise ConfigError(f"chip file {path}: the core has no '{section}' unit; a SANA-FE core needs one")
    for u in units:
        model = (u.get("attributes") or {}).get("model")
        if prefer_model is not None and model == prefer_model:
            return str(u.get("name", section)), u.get("attributes") or {}
    for u in units:
        model = (u.get("attributes") or {}).get("model")
        if avoid_model is None or model != avoid_model:
            return str(u.get("name", section)), u.get("attributes") or {}
    raise ConfigError(f"chip file {path}: no usable '{section}' unit")


def _sync_table(attrs: dict, path: str) -> tuple[tuple[int, float], ...]:
    model = attrs.get("sync_model", "fixed")
    lat = attrs.get("latency_sync", 0.0)
    if model == "table":
        if not isinstance(lat, dict) or not lat:
            raise ConfigError(f"chip file {path}: sync_model 'table' needs a latency_sync table {{tiles: seconds}}")
        return tuple(sorted((int(k), float(v)) for k, v in lat.items()))
    try:
        return ((1, float(lat or 0.0)),)
    except (TypeError, ValueError):
        raise ConfigError(f"chip file {path}: latency_sync {lat!r} is not a number") from None


def parse_chip(text: str, path: str, name: str | None = None) -> ChipSpec:
    """Read a SANA-FE architecture file (plus the optional ``svformer_deploy`` section) into a :class:`ChipSpec`."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ConfigError(f"chip file {path} is not valid YAML ({problem}{where}); give a SANA-FE architecture "
                          "file") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("architecture"), dict):
        raise ConfigError(f"chip file {path} has no 'architecture:' section; give a SANA-FE architecture file "
                          "(see sanafe/examples/loihi.yaml) or a registered chip name")
    arch = doc["architecture"]
    extra = doc.get("svformer_deploy") or {}
    attrs = arch.get("attributes") or {}
    if attrs.get("topology", "mesh") != "mesh":
        raise ConfigError(f"chip file {path}: topology {attrs.get('topology')!r}; only a mesh is modelled")
    width, height = int(attrs.get("width", 0)), int(attrs.get("height", 0))
    tiles_sec = arch.get("tile") or []
    if not isinstance(tiles_sec, list) or len(tiles_sec) != 1:
        raise ConfigError(f"chip file {path}: expected one replicated tile entry (e.g. 'tile[0..31]'), found "
                          f"{len(tiles_sec) if isinstance(tiles_sec, list) else 0}; chips with tiles of different "
                          "kinds are not supported")
    tile = tiles_sec[0]
    n_tiles = len(_expand(str(tile.get("name", "tile"))))
    if width < 1 or height < 1 or width * height != n_tiles:
        raise ConfigError(f"chip file {path}: mesh {width} x {height} does not hold its {n_tiles} tiles")
    cores_sec = tile.get("core") or []
    if not isinstance(cores_sec, list) or len(cores_sec) != 1:
        raise ConfigError(f"chip file {path}: expected one replicated core entry per tile; cores of different "
                          "kinds are not supported")
    core = cores_sec[0]
    per_tile = len(_expand(str(core.get("name", "core"))))
    cattrs = core.get("attributes") or {}
    tattrs = tile.get("attributes") or {}
    soma_name, soma = _unit(core, "soma", path, avoid_model="input")
    input_name = ""
    for u in core.get("soma") or []:
        if (u.get("attributes") or {}).get("model") == "input":
            input_name = str(u.get("name", ""))
    syn_name, syn = _unit(core, "synapse", path)
    _, den = _unit(core, "dendrite", path)
    _, ain = _unit(core, "axon_in", path)
    _, aout = _unit(core, "axon_out", path)
    where = f"chip file {path}"
    costs = EventCosts(
        access_neuron=_pair(soma, "soma", "energy_access_neuron", "latency_access_neuron", path),
        update_neuron=_pair(soma, "soma", "energy_update_neuron", "latency_update_neuron", path),
        spike_out=_pair(soma, "soma", "energy_spike_out", "latency_spike_out", path),
        synapse=_pair(syn, "synapse", "energy_process_spike", "latency_process_spike", path),
        dendrite=(float(den.get("energy_update", 0.0)), float(den.get("latency_update", 0.0))),
        message_in=_pair(ain, "axon_in", "energy_message_in", "latency_message_in", path),
        message_out=_pair(aout, "axon_out", "energy_message_out", "latency_message_out", path),
        hop_east=_pair(tattrs, "tile", "energy_east_hop", "latency_east_hop", path),
        hop_west=_pair(tattrs, "tile", "energy_west_hop", "latency_west_hop", path),
        hop_north=_pair(tattrs, "tile", "energy_north_hop", "latency_north_hop", path),
        hop_south=_pair(tattrs, "tile", "energy_south_hop", "latency_south_hop", path),
        sync=_sync_table(attrs, path))
    nf = extra.get("number_format")
    number_format = NumberFormat(**{k: int(v) for k, v in nf.items()}) if nf else NumberFormat(stated=False)
    model = str(soma.get("model", ""))
    limits = Limits(neurons=_optional_int(cattrs, "max_neurons_supported", where) or 1024,
                    axons_in=_optional_int(cattrs, "max_axons_in", where),
                    axons_out=_optional_int(cattrs, "max_axons_out", where),
                    synapse_memory_bits=_optional_int(cattrs, "max_synapse_memory_bits", where),
                    distinct_weights_per_neuron=_optional_int(cattrs, "max_distinct_weights_per_neuron", where))
    inter = extra.get("inter_chip") or {}
    published = bool(extra.get("energy_published", any(v > 0 for v in (
        costs.access_neuron[0], costs.synapse[0], costs.message_out[0]))))
    return ChipSpec(
        name=str(extra.get("name") or name or Path(path).stem), title=str(extra.get("title") or arch.get("name", "")),
        path=str(path), mesh_width=width, mesh_height=height, cores_per_tile=per_tile, limits=limits,
        number_format=number_format, costs=costs, neuron_model=model, host_currents=bool(extra.get("host_currents",
                                                                                                  True)),
        energy_published=published, pre_silicon=bool(extra.get("pre_silicon", False)),
        sources={str(k): str(v) for k, v in (extra.get("sources") or {}).items()},
        caveats=tuple(str(c) for c in extra.get("caveats") or ()),
        inter_chip_hop=(inter.get("energy_hop"), inter.get("latency_hop")), soma_unit=soma_name,
        input_unit=input_name, synapse_unit=syn_name, raw=doc)


def load_chip(spec: str | Path) -> ChipSpec:
    """A registered chip by name (:func:`list_chips`) or a SANA-FE architecture file by path."""
    s = str(spec)
    if s in list_chips():
        res = resources.files("svformer_deploy.chip").joinpath(CHIP_DIR, f"{s}.yaml")
        return parse_chip(res.read_text(encoding="utf-8"), f"<registered chip {s}>", name=s)
    p = Path(s).expanduser()
    if not p.is_file():
        raise ConfigError(f"chip {s!r} is neither a registered chip ({', '.join(list_chips())}) nor a file; give one "
                          "of those names or the path of a SANA-FE architecture YAML")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read chip file {p}: {err}") from None
    return parse_chip(text, str(p))
