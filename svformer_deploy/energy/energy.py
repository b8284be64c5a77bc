"""Energy of counted operations under a hardware profile, with the memory model in the headline.

``compute = sum_op_class count x pJ(op_class)`` (what papers report);
``memory`` = :func:`svformer_deploy.energy.memory.memory_energy` of the same counts (weights, activations,
membrane potentials, outputs; tiers chosen by footprint); ``total = compute + memory``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from svformer_deploy.energy.counter import OpCounts
from svformer_deploy.energy.memory import MemoryEnergy, memory_energy
from svformer_deploy.energy.profiles import DEFAULT_PROFILE, HardwareProfile, get_profile
from svformer_deploy.energy.rules import OP_CLASSES

__all__ = ["EnergyReport", "energy_of"]


@dataclass
class EnergyReport:
    """Energy per row of the counts, and totals, under one profile.

    Attributes:
        df: the counts' table plus ``energy_pj`` (count x pJ of its op class).
        profile: the profile used.
        compute_pj: total compute energy (pJ), summed over the batch.
        per_class_pj: compute energy per op class.
        memory: the memory model under the weight-stationary dataflow (:class:`MemoryEnergy`).
        memory_per_event: the same under the fetch-per-event dataflow.
    """

    df: pd.DataFrame
    profile: HardwareProfile
    compute_pj: float
    per_class_pj: dict[str, float]
    memory: MemoryEnergy
    memory_per_event: MemoryEnergy

    @property
    def memory_pj(self) -> float:
        """Memory energy (pJ), weight-stationary."""
        return self.memory.total_pj

    @property
    def total_pj(self) -> float:
        """Compute + memory (weight-stationary), the headline."""
        return self.compute_pj + self.memory.total_pj

    @property
    def compute_mj(self) -> float:
        return self.compute_pj * 1e-9


def energy_of(counts: OpCounts, profile: str | Path | HardwareProfile = DEFAULT_PROFILE) -> EnergyReport:
    """Price every count of ``counts`` with ``profile`` (a registered name, a YAML/JSON file or a profile), and
    its memory facts with the memory model under both dataflows."""
    prof = get_profile(profile)
    pj = {c: prof.pj(c) for c in OP_CLASSES}
    df = counts.df.copy()
    df["energy_pj"] = df["count"].astype("float64") * df["op_class"].map(pj).astype("float64")
    per_class = df.groupby("op_class")["energy_pj"].sum()
    per_class_pj = {c: float(per_class.get(c, 0.0)) for c in OP_CLASSES}
    return EnergyReport(df=df, profile=prof, compute_pj=float(df["energy_pj"].sum()), per_class_pj=per_class_pj,
                        memory=memory_energy(counts, prof, "weight-stationary"),
                        memory_per_event=memory_energy(counts, prof, "fetch-per-event"))
