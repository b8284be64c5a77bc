"""Hardware energy profiles: a registry of named per-operation energies, each with its source.

A profile gives the energy (pJ) of the primitives ``mac``, ``ac``, ``mul``, ``add`` (every op class maps to one
of them, see :data:`svformer_deploy.energy.rules.PRIMITIVE_OF`), optional per-op-class overrides, and the
bytes per value the memory model moves (:mod:`svformer_deploy.energy.memory`). User profiles are YAML or JSON files with the same keys::

    name: my-chip
    source: "datasheet X, table 3"
    energy_pj: {mac: 4.6, ac: 0.9, mul: 3.7, add: 0.9}
    overrides_pj: {neuron_mul: 10.0}        # optional, keys are op classes
    bytes_per_value: 2                       # optional (default 4): weights, activations, membrane potentials
    memory_pj_per_byte: 1.25                 # optional: one flat memory cost instead of the footprint tiers
    caveats: "..."                           # optional

Besides the registered names, ``45nm-int<N>`` (N = 1..32) names the N-bit integer profile that
:func:`quantised_profile` builds from Horowitz's integer figures (measured where he measured the width,
interpolated or scaled otherwise); the widths the registered models' Yan et al.
comparison uses (ceil(log2(T+1)) bits) are registered, so ``energy profiles`` lists them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svformer_deploy.energy.rules import OP_CLASSES, PRIMITIVE_OF
from svformer_deploy.errors import ProfileError

__all__ = ["HardwareProfile", "register_profile", "get_profile", "list_profiles", "load_profile", "quantised_profile",
           "profile_table", "DEFAULT_PROFILE", "caveat_lines",
           "HOROWITZ_INT_PJ"]

_PRIMITIVES = ("mac", "ac", "mul", "add")
#: The profile used when none is named.
DEFAULT_PROFILE = "45nm-fp32"
#: A name of the integer family :func:`quantised_profile` derives (``45nm-int4``).
_QUANTISED_NAME = re.compile(r"45nm-int(\d+)")


@dataclass(frozen=True)
class HardwareProfile:
    """Per-operation energies in picojoules, with where each figure comes from.

    Attributes:
        name: registry name.
        energy_pj: pJ per ``mac``, ``ac``, ``mul``, ``add``.
        source: citation of the figures.
        overrides_pj: pJ for individual op classes that do not cost their primitive.
        memory_pj_per_byte: a flat cost per byte moved that replaces the memory model's footprint-chosen tiers
            (None: use the tiers; 0: no memory term, for chips whose per-op figures include their memory).
        memory_source: citation of the flat memory figure.
        caveats: what the figures do not capture.
        bytes_per_value: size of one weight, real activation or membrane potential (spikes are 1 bit), for the
            memory model.
        prices_ann: whether ANN baselines may be priced under this profile (False for a neuromorphic chip whose
            figures say nothing about dense arithmetic; reports then price the ANNs under 45nm-fp32).
    """

    name: str
    energy_pj: dict[str, float]
    source: str
    overrides_pj: dict[str, float] = field(default_factory=dict)
    memory_pj_per_byte: float | None = None
    memory_source: str = ""
    caveats: str = ""
    bytes_per_value: float = 4.0
    prices_ann: bool = True

    def __post_init__(self) -> None:
        missing = [p for p in _PRIMITIVES if p not in self.energy_pj]
        if missing:
            raise ProfileError(f"profile {self.name!r} lacks energies for {missing}; give pJ for all of {list(_PRIMITIVES)}")
        unknown = sorted(set(self.energy_pj) - set(_PRIMITIVES))
        bad_over = sorted(set(self.overrides_pj) - set(OP_CLASSES))
        if unknown or bad_over:
            raise ProfileError(f"profile {self.name!r} has unknown keys {unknown + bad_over}; energy_pj keys are "
                               f"{list(_PRIMITIVES)}, overrides_pj keys are op classes {list(OP_CLASSES)}")
        for k, v in {**self.energy_pj, **self.overrides_pj}.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0 or v == float("inf"):
                raise ProfileError(f"profile {self.name!r}: energy of {k!r} must be a finite number >= 0 pJ, got {v!r}")
        if self.memory_pj_per_byte is not None and not (isinstance(self.memory_pj_per_byte, (int, float))
                                                        and self.memory_pj_per_byte >= 0):
            raise ProfileError(f"profile {self.name!r}: memory_pj_per_byte must be a number >= 0")
        if not self.source:
            raise ProfileError(f"profile {self.name!r} has no source; state where the figures come from")

    def pj(self, op_class: str) -> float:
        """Energy of one operation of ``op_class`` (``bn_folded`` costs 0)."""
        if op_class in self.overrides_pj:
            return float(self.overrides_pj[op_class])
        prim = PRIMITIVE_OF[op_class]
        return 0.0 if prim == "none" else float(self.energy_pj[prim])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "energy_pj": dict(self.energy_pj), "overrides_pj": dict(self.overrides_pj),
                "per_op_class_pj": {c: self.pj(c) for c in OP_CLASSES}, "source": self.source,
                "memory_pj_per_byte": self.memory_pj_per_byte, "memory_source": self.memory_source,
                "bytes_per_value": self.bytes_per_value, "prices_ann": self.prices_ann, "caveats": self.caveats}


_PROFILES: dict[str, HardwareProfile] = {}


def register_profile(profile: HardwareProfile) -> HardwareProfile:
    """Add a profile to the registry (names are unique)."""
    if profile.name in _PROFILES:
        raise ProfileError(f"a profile named {profile.name!r} is already registered")
    _PROFILES[profile.name] = profile
    return profile


def list_profiles() -> list[str]:
    return sorted(_PROFILES)


def get_profile(name_or_path: str | Path | HardwareProfile) -> HardwareProfile:
    """A registered profile by name, or a user profile from a ``.yaml``/``.yml``/``.json`` file."""
    if isinstance(name_or_path, HardwareProfile):
        return name_or_path
    key = str(name_or_path)
    if key in _PROFILES:
        return _PROFILES[key]
    if (bits := _QUANTISED_NAME.fullmatch(key)) is not None:
        return quantised_profile(int(bits.group(1)))
    if key.endswith((".yaml", ".yml", ".json")) or Path(key).exists():
        return load_profile(key)
    raise ProfileError(f"unknown energy profile {key!r}; use one of {list_profiles()}, 45nm-int<N> (N = 1..32 "
                       "bits) or a YAML/JSON profile file")


def load_profile(path: str | Path) -> HardwareProfile:
    """Read and validate a user profile file (see the module docstring for its keys)."""
    from svformer_deploy._paths import read_user_text, require_file

    p = require_file(path, "profile file", f"give a registered name ({list_profiles()}) or a YAML/JSON file",
                     ProfileError)
    text = read_user_text(p)
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # noqa: BLE001 - any parse error becomes one clear message
        raise ProfileError(f"cannot parse profile file {p}: {err}; write valid YAML or JSON") from err
    if not isinstance(data, dict):
        raise ProfileError(f"profile file {p} must hold a mapping with keys name, source, energy_pj")
    allowed = {"name", "energy_pj", "source", "overrides_pj", "memory_pj_per_byte", "memory_source", "caveats",
               "bytes_per_value", "prices_ann"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ProfileError(f"profile file {p} has unknown keys {unknown}; allowed: {sorted(allowed)}")
    for req in ("energy_pj", "source"):
        if req not in data:
            raise ProfileError(f"profile file {p} lacks {req!r}")
    if not isinstance(data["energy_pj"], dict) or not isinstance(data.get("overrides_pj", {}), dict):
        raise ProfileError(f"profile file {p}: energy_pj and overrides_pj must be mappings op -> pJ")
    return HardwareProfile(name=str(data.get("name", p.stem)), energy_pj=dict(data["energy_pj"]),
                           source=str(data["source"]), overrides_pj=dict(data.get("overrides_pj", {}) or {}),
                           memory_pj_per_byte=data.get("memory_pj_per_byte"),
                           memory_source=str(data.get("memory_source", "")), caveats=str(data.get("caveats", "")),
                           bytes_per_value=float(data.get("bytes_per_value", 4.0)),
                           prices_ann=bool(data.get("prices_ann", True)))


_HOROWITZ = "M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, 45 nm"
register_profile(HardwareProfile(
    "45nm-fp32", {"mac": 4.6, "ac": 0.9, "mul": 3.7, "add": 0.9},
    source=_HOROWITZ + ": fp32 mult 3.7 pJ + add 0.9 pJ = MAC 4.6 pJ; AC = fp32 add 0.9 pJ",
    caveats="Arithmetic figures of the Spikformer/SVFormer papers' convention, not measurements of any chip; "
            "control, addressing and routing are not modelled."))
register_profile(HardwareProfile(
    "45nm-fp16", {"mac": 1.5, "ac": 0.4, "mul": 1.1, "add": 0.4},
    source=_HOROWITZ + ": fp16 mult 1.1 pJ + add 0.4 pJ = MAC 1.5 pJ; AC = fp16 add 0.4 pJ",
    caveats="As 45nm-fp32, 16-bit operands.", bytes_per_value=2.0))
register_profile(HardwareProfile(
    "45nm-int8", {"mac": 0.23, "ac": 0.03, "mul": 0.2, "add": 0.03},
    source=_HOROWITZ + ": int8 mult 0.2 pJ + int8 add 0.03 pJ = MAC 0.23 pJ; AC = int8 add 0.03 pJ",
    caveats="Assumes 8-bit weights and accumulators; membrane potentials and BN in 8 bits are optimistic.",
    bytes_per_value=1.0))
register_profile(HardwareProfile(
    "loihi", {"mac": 4.6, "ac": 23.6, "mul": 3.7, "add": 0.9},
    overrides_pj={"neuron_mul": 81.0, "neuron_add": 0.0, "spike_product": 23.6},
    memory_pj_per_byte=0.0, prices_ann=False,
    memory_source="none: Loihi's per-synop and per-update figures include its on-core SRAM accesses",
    source="Davies et al., 'Loihi: a neuromorphic manycore processor with on-chip learning', IEEE Micro 38(1), "
           "2018: ~23.6 pJ per synaptic spike op, ~81 pJ per neuron update (figures quoted second-hand via "
           "KerasSpiking's documentation; not verified against the primary paper: check it before publishing)",
    caveats="PRE-SILICON figures: Davies et al. give them from pre-silicon circuit simulation, not chip "
            "measurements; quoted second-hand. One neuron update (81 pJ) is booked on neuron_mul (one per "
            "element-step), neuron_add costs 0. Loihi has no real-valued MAC, BN or spike x spike product: "
            "mac/mul/add use 45nm-fp32 figures (a host or co-processor), spike_product is priced as a synaptic "
            "op, which Loihi cannot compute natively. ANN baselines priced under this profile are therefore "
            "45nm-fp32 arithmetic, not Loihi figures, and are not shown under it. Excludes the ~3.5 pJ per spike "
            "hop and static power. No public per-op figures exist for Loihi 2."))


HOROWITZ_INT_PJ: dict[str, dict[int, float]] = {"mul": {8: 0.2, 32: 3.1}, "add": {8: 0.03, 16: 0.05, 32: 0.1}}
"""Horowitz's measured 45 nm integer figures in pJ, by operand width: multiplies at 8 and 32 bits, adds at 8, 16
and 32 bits (none below 8)."""
_WIDTH_EXPONENT = {"mul": 2, "add": 1}
"""How an integer op's energy is scaled below 8 bits, where nothing was measured: an array multiplier with the square
of the width, an adder linearly (Horowitz's own 8 -> 32-bit steps: multiply x15.5, add x3.3, against x16 and x4)."""


def _int_figure(op: str, bits: int) -> tuple[float, bool, str]:
    """(pJ, measured?, the derivation in words) of the integer ``op`` (``mul`` or ``add``) at ``bits``:

    * Horowitz's figure (:data:`HOROWITZ_INT_PJ`) where he measured that width;
    * between two widths W1 < bits < W2 he measured, the power law through both figures:
      E = E(W1) x (bits/W1)^e, e = log(E(W2)/E(W1)) / log(W2/W1);
    * below 8 bits, the 8-bit figure x (bits/8)^e, e = :data:`_WIDTH_EXPONENT` (2 multiply, 1 add)."""
    import math

    measured = HOROWITZ_INT_PJ[op]
    word = {"mul": "mult", "add": "add"}[op]
    if bits in measured:
        return measured[bits], True, f"{word} {measured[bits]:g} pJ (int{bits}, measured)"
    below = [w for w in measured if w < bits]
    if below:
        lo, hi = max(below), min(w for w in measured if w > bits)
        e = math.log(measured[hi] / measured[lo]) / math.log(hi / lo)
        how = f"(interpolated between int{lo} and int{hi})"
    else:
        lo, e, how = min(measured), _WIDTH_EXPONENT[op], "(scaled from int8)"
    pj = measured[lo] * (bits / lo) ** e
    factor = f"({bits}/{lo})^2" if e == 2 else f"{bits}/{lo}" if e == 1 else f"({bits}/{lo})^{e:.4g}"
    return pj, False, f"{word} {measured[lo]:g} pJ x {factor} = {pj:.4g} pJ {how}"


def quantised_profile(bits: int) -> HardwareProfile:
    """The ``45nm-int<bits>`` profile (Yan et al., arXiv 2409.08290, compare an SNN with a ceil(log2(T+1))-bit
    ANN): multiply and add each Horowitz's measured figure where he measured that width (multiply: 8, 32 bits;
    add: 8, 16, 32 bits), else interpolated between the measured widths around it, or below 8 bits scaled from
    int8: multiply x (bits/8)^2, add x bits/8 (:func:`_int_figure`); MAC = multiply + add, AC = add;
    ``bytes_per_value = bits / 8`` (values packed; the memory tiers' pJ per byte unchanged)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 32:
        raise ProfileError(f"a 45nm-int<N> profile needs N = 1..32 bits, got {bits!r}; e.g. 45nm-int4")
    k = bits / 8
    (mul, mul_measured, mul_how), (add, add_measured, add_how) = _int_figure("mul", bits), _int_figure("add", bits)
    derived = [word for word, measured in (("multiply", mul_measured), ("add", add_measured)) if not measured]
    if derived:
        what = " and ".join(derived)
        how = ("scaled from his 8-bit figures (a multiply with the square of the width, an add linearly: an "
               "assumption; his own 8 -> 32-bit steps are x15.5 and x3.3 against x16 and x4)" if bits < 8 else
               "interpolated between the two widths around it he measured (the power law through both figures: an "
               "assumption)")
        status = (f"DERIVED, NOT MEASURED ({what}): Horowitz measured integer multiplies at 8 and 32 bits and adds "
                  f"at 8, 16 and 32 bits, so the {what} at {bits} bits {'is' if len(derived) == 1 else 'are'} {how}"
                  + ("".join(f"; the {w} is his measured int{bits} figure" for w in ("multiply", "add")
                             if w not in derived))
                  + (", a design point for Yan et al.'s comparison with a ceil(log2(T+1))-bit ANN" if bits < 8 else "")
                  + ".")
    else:
        status = f"MEASURED: Horowitz's int{bits} multiply and add."
    return HardwareProfile(
        f"45nm-int{bits}", {"mac": mul + add, "ac": add, "mul": mul, "add": add},
        source=_HOROWITZ + f", {bits}-bit integers: {mul_how}, {add_how}, MAC = {mul + add:.4g} pJ; AC = add",
        caveats=f"{status} Assumes {bits}-bit weights and accumulators. Values take {k:g} byte(s) each (packed) in "
                "the memory model, whose SRAM/DRAM pJ per byte are the 45 nm tiers unchanged.",
        bytes_per_value=k)


# ceil(log2(T + 1)) bits, the width of Yan et al.'s comparison, for the registered models: T = 8 (svformer_tiny,
# svformer_small) and T = 16 (svformer_ucf101); any other width resolves by name through get_profile
for _bits in (4, 5):
    register_profile(quantised_profile(_bits))


def caveat_lines(profile: dict[str, Any]) -> list[str]:
    """The markdown bullet of a profile's caveats (``profile``: :meth:`HardwareProfile.to_dict`, as every summary
    stores it), ``- Profile `NAME`: CAVEATS``; none for a profile without caveats. The one rendering of a
    profile's caveats in the reports (``energy report``, ``energy price``)."""
    return [f"- Profile `{profile['name']}`: {profile['caveats']}"] if profile.get("caveats") else []


def profile_table(profiles: list[HardwareProfile]) -> str:
    """Every figure the ``profiles`` use, as a plain-text table (one column per profile): pJ per op class
    (``*`` marks a per-op-class override of the primitive's figure), the memory term, bytes per value, whether
    ANNs are priced under it; then each profile's source and caveats."""
    def memory(p: HardwareProfile) -> str:
        if p.memory_pj_per_byte is None:
            return "tiers"
        return "none" if p.memory_pj_per_byte == 0 else f"{p.memory_pj_per_byte:g} pJ/B"

    rows = [["pJ per op", *[p.name for p in profiles]]]
    rows += [[f"{c} ({PRIMITIVE_OF[c]})", *[f"{p.pj(c):g}" + ("*" if c in p.overrides_pj else "") for p in profiles]]
             for c in OP_CLASSES]
    rows += [["memory", *[memory(p) for p in profiles]],
             ["bytes per value", *[f"{p.bytes_per_value:g}" for p in profiles]],
             ["prices ANNs", *["yes" if p.prices_ann else "no" for p in profiles]]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    text = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
            .rstrip() for r in rows]
    text += ["", "* overrides the primitive's figure for that op class; memory: tiers = SRAM/DRAM tiers chosen by "
             "footprint (Horowitz 45 nm), none = included in the per-op figures. 45nm-int<N> (N = 1..32) is "
             "accepted wherever a profile is: Horowitz's integer figures where he measured the width (multiply 8, 32 "
             "bits; add 8, 16, 32 bits), else interpolated between them, or below 8 bits scaled like 45nm-int4 "
             "(`energy profiles 45nm-int<N>` lists it).", ""]
    for p in profiles:
        text.append(f"{p.name}: {p.source}")
        if p.memory_source:
            text.append(f"  memory: {p.memory_source}")
        if p.caveats:
            text.append(f"  caveats: {p.caveats}")
    return "\n".join(text) + "\n"
