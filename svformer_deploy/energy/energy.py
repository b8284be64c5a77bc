"""Energy of counted operations under a hardware profile: ``E = sum_op_class count x pJ(op_class)``.

The compute-only figure is what papers report; the optional memory term adds
``bytes read x memory_pj_per_byte`` with bytes = weight values x bytes_per_value (each weight read once per
timestep per clip) + real activation values x bytes_per_value + binary activation values / 8 (1 bit per spike).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from svformer_deploy.energy.counter import OpCounts
from svformer_deploy.energy.profiles import HardwareProfile, get_profile
from svformer_deploy.energy.rules import OP_CLASSES

__all__ = ["EnergyReport", "energy_of", "memory_bytes"]


@dataclass
class EnergyReport:
    """Energy per row of the counts, and totals, under one profile.

    Attributes:
        df: the counts' table plus ``energy_pj`` (count x pJ of its op class).
        profile: the profile used.
        compute_pj: total compute energy (pJ), summed over the batch.
        per_class_pj: compute energy per op class.
        memory_bytes: bytes read (see :func:`memory_bytes`), or None when the profile has no memory cost.
        memory_pj: memory energy (pJ), or None.
    """

    df: pd.DataFrame
    profile: HardwareProfile
    compute_pj: float
    per_class_pj: dict[str, float]
    memory_bytes: float | None
    memory_pj: float | None

    @property
    def compute_mj(self) -> float:
        return self.compute_pj * 1e-9


def memory_bytes(counts: OpCounts, profile: HardwareProfile) -> float:
    """Bytes read by the synaptic ops: weights and real activations at ``bytes_per_value``, spikes at 1 bit."""
    m = counts.memory
    if m.empty:
        return 0.0
    b = profile.bytes_per_value
    return float(m["weight_values"].sum() * b + m["real_act_values"].sum() * b + m["binary_act_values"].sum() / 8)


def energy_of(counts: OpCounts, profile: str | Path | HardwareProfile = "45nm-fp32") -> EnergyReport:
    """Price every count of ``counts`` with ``profile`` (a registered name, a YAML/JSON file or a profile)."""
    prof = get_profile(profile)
    pj = {c: prof.pj(c) for c in OP_CLASSES}
    df = counts.df.copy()
    df["energy_pj"] = df["count"].astype("float64") * df["op_class"].map(pj).astype("float64")
    per_class = df.groupby("op_class")["energy_pj"].sum()
    per_class_pj = {c: float(per_class.get(c, 0.0)) for c in OP_CLASSES}
    mem_b = memory_bytes(counts, prof) if prof.memory_pj_per_byte is not None else None
    mem_pj = mem_b * prof.memory_pj_per_byte if mem_b is not None else None
    return EnergyReport(df=df, profile=prof, compute_pj=float(df["energy_pj"].sum()), per_class_pj=per_class_pj,
                        memory_bytes=mem_b, memory_pj=mem_pj)
