"""Energy accounting: exact operation counts per layer x timestep x op class, and their energy.

Public API (stable; used by the sparsity notebook)::

    counts = count_ops(model, clips)            # OpCounts: .df (layer, timestep, op_class, count), .totals()
    report = energy_of(counts, "45nm-fp32")     # EnergyReport: .df (+ energy_pj), .compute_pj, .memory_pj, .total_pj
    dense = count_ops(model, clips, dense=True) # dense MACs (ANN / fvcore convention)

Rules: the rule table :mod:`svformer_deploy.energy.rules` (``register_rule``, ``rules_markdown``); memory model:
:mod:`svformer_deploy.energy.memory`; conventions and what-if pricing from stated rates:
:mod:`svformer_deploy.energy.conventions`; profiles: :mod:`svformer_deploy.energy.profiles`.
"""

from svformer_deploy.energy.counter import COLUMNS, OpCounts, count_ops
from svformer_deploy.energy.energy import EnergyReport, energy_of
from svformer_deploy.energy.memory import MemoryEnergy, memory_energy
from svformer_deploy.energy.profiles import HardwareProfile, get_profile, list_profiles, load_profile, register_profile
from svformer_deploy.energy.rules import OP_CLASSES, PRIMITIVE_OF, list_rules, register_rule, rules_markdown

__all__ = ["count_ops", "OpCounts", "COLUMNS", "energy_of", "EnergyReport", "memory_energy", "MemoryEnergy",
           "HardwareProfile", "get_profile", "list_profiles", "load_profile", "register_profile", "OP_CLASSES",
           "PRIMITIVE_OF", "register_rule", "list_rules", "rules_markdown"]
