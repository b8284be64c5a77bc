"""The memory model: energy of moving weights, activations, membrane potentials and outputs, applied alike to the
SNN and every ANN baseline, from the memory facts the counter records per layer (:data:`counter.MEMORY_COLUMNS`).

The rules are :data:`RULES` (printed in every report; ``docs/energy.md`` states the same).
"""

from __future__ import annotations

from dataclasses import dataclass

from svformer_deploy.energy.counter import OpCounts
from svformer_deploy.energy.profiles import HardwareProfile, get_profile
from svformer_deploy.errors import EnergyError

RULES = """* **Sizes.** Weights, real activations and membrane potentials take the profile's ``bytes_per_value``; a spike
  takes 1 bit.
* **Where data lives** is chosen by footprint, per data kind, as the smallest tier that holds it
  (Horowitz, ISSCC 2014, 45 nm, 64-bit access: SRAM 8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ; DRAM 1.3-2.6 nJ, of
  which the low end is used): *weights* by the model's whole weight footprint; *membrane potentials* by the
  state all neuron layers keep across timesteps (one value per neuron); *activations* by the largest layer's
  inputs + outputs of one image (one timestep of one clip).
* **Weights, two dataflows** (Lemaire et al., ICONIP 2022): *weight-stationary* reads each weight once per image
  it is applied to (once per timestep per view for the time-folded layers, once per view for the head Conv3d,
  whose kernel spans all T frames); *fetch-per-event* reads one weight per synaptic op that has a weight operand
  (every AC, every MAC).
* **Activations**: every input value of a synaptic op is read once, every output value of a synaptic op or a
  neuron layer is written once.
* **Membrane potentials**: each neuron update reads and writes its state V (2 values per element-step).
* A profile with ``memory_pj_per_byte`` set replaces the tiers by that one flat cost; ``0`` removes the term
  (a chip whose per-op figures already include its memory, e.g. Loihi's per-synop energy).
"""

__all__ = ["RULES", "MemoryTier", "TIERS_45NM", "DATAFLOWS", "MemoryEnergy", "memory_energy", "tier_for",
           "memory_convention"]


@dataclass(frozen=True)
class MemoryTier:
    """One level of the memory hierarchy: capacity in bytes (None = unbounded) and cost per byte moved."""

    name: str
    capacity_bytes: float | None
    pj_per_byte: float


#: Horowitz, ISSCC 2014, 45 nm: per 64-bit (8-byte) access.
TIERS_45NM: tuple[MemoryTier, ...] = (
    MemoryTier("SRAM 8 KB", 8 * 1024, 10.0 / 8),
    MemoryTier("SRAM 32 KB", 32 * 1024, 20.0 / 8),
    MemoryTier("SRAM 1 MB", 1024 * 1024, 100.0 / 8),
    MemoryTier("DRAM", None, 1300.0 / 8),
)
TIERS_SOURCE = ("Horowitz, ISSCC 2014, 45 nm, 64-bit access: SRAM 8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ; "
                "DRAM 1.3-2.6 nJ (low end used)")
DATAFLOWS = ("weight-stationary", "fetch-per-event")


def memory_convention(profile: HardwareProfile) -> str:
    """How ``profile`` counts memory, in words: the footprint tiers, one flat cost per byte, or none (folded into
    its per-op figures). Two energies count memory the same way exactly when these strings are equal; a ratio of
    compute + memory totals is like for like only then."""
    if profile.memory_pj_per_byte is None:
        return "tiers by footprint (Horowitz 45 nm)"
    if profile.memory_pj_per_byte == 0:
        return "none (included in the per-op figures)"
    return f"flat {profile.memory_pj_per_byte:g} pJ per byte"


def tier_for(nbytes: float, tiers: tuple[MemoryTier, ...] = TIERS_45NM) -> MemoryTier:
    """The smallest tier whose capacity holds ``nbytes``."""
    for t in tiers:
        if t.capacity_bytes is None or nbytes <= t.capacity_bytes:
            return t
    return tiers[-1]


@dataclass(frozen=True)
class MemoryEnergy:
    """Memory energy of one counted batch under one dataflow (pJ per part, bytes per part, tier per data kind)."""

    dataflow: str
    pj: dict[str, float]  # weights, activations, membrane, outputs
    bytes: dict[str, float]
    tiers: dict[str, str]  # weights, activations, membrane -> tier name
    footprint_bytes: dict[str, float]

    @property
    def total_pj(self) -> float:
        return float(sum(self.pj.values()))


def memory_energy(counts: OpCounts, profile: str | HardwareProfile = "45nm-fp32",
                  dataflow: str = "weight-stationary") -> MemoryEnergy:
    """Price the memory facts of ``counts`` (see the module docstring) under ``profile`` and ``dataflow``."""
    if dataflow not in DATAFLOWS:
        raise EnergyError(f"unknown dataflow {dataflow!r}; use one of {list(DATAFLOWS)}")
    prof = get_profile(profile)
    m = counts.memory
    b = float(prof.bytes_per_value)
    images = max(1, counts.batch * (counts.num_steps or 1))
    w_foot = float(m["weight_values"].sum()) * b if len(m) else 0.0
    s_foot = float(m["state_values"].sum()) / 2 / images * b if len(m) else 0.0
    per_layer_act = (m["real_act_values"] + m["real_out_values"]) * b + (m["binary_act_values"]
                                                                         + m["binary_out_values"]) / 8
    a_foot = float(per_layer_act.max()) / images if len(m) else 0.0
    tiers = {"weights": tier_for(w_foot), "activations": tier_for(a_foot), "membrane": tier_for(s_foot)}
    w_values = float(m["weight_reads" if dataflow == "weight-stationary" else "weight_uses"].sum()) if len(m) else 0.0
    nbytes = {
        "weights": w_values * b,
        "activations": float(m["real_act_values"].sum() * b + m["binary_act_values"].sum() / 8) if len(m) else 0.0,
        "membrane": float(m["state_values"].sum()) * b if len(m) else 0.0,
        "outputs": float(m["real_out_values"].sum() * b + m["binary_out_values"].sum() / 8) if len(m) else 0.0,
    }

    def cost(kind: str) -> float:
        if prof.memory_pj_per_byte is not None:
            return float(prof.memory_pj_per_byte)
        return tiers["activations" if kind == "outputs" else kind].pj_per_byte

    pj = {k: v * cost(k) for k, v in nbytes.items()}
    return MemoryEnergy(dataflow=dataflow, pj=pj, bytes=nbytes,
                        tiers={k: ("flat" if prof.memory_pj_per_byte is not None else t.name) for k, t in tiers.items()},
                        footprint_bytes={"weights": w_foot, "activations": a_foot, "membrane": s_foot})
