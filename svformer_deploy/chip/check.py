"""The constraint check a mapping runs before anything else: every way the network breaks the chip's rules, one
line each, naming the layer, the limit, the value and the fix (the style of sinabs' and rockpool's design-rule
checks). A network with any violation is not mapped (exit status 2, nothing written).

Lost precision is not a limit: how many weights round to 0 is stated per layer in the mapping
(:func:`svformer_deploy.chip.report.precision_summary`), beside the measured agreement of the integer chip
model's predictions with the float model's on the same videos, which says whether it matters."""

from __future__ import annotations

from dataclasses import dataclass

from svformer_deploy.chip.arch import ChipSpec
from svformer_deploy.chip.geometry import TermGeometry
from svformer_deploy.chip.network import ChipLayer
from svformer_deploy.chip.quantize import FixedLayer
from svformer_deploy.errors import SVFormerDeployError

__all__ = [
    "FAN_IN_FIX",
    "NARROW_FIX",
    "SUPPORTED_SOMA",
    "ChipConstraintError",
    "Violation",
    "check_layer",
    "fan_in_fix",
    "single_neuron_demand",
]

SUPPORTED_SOMA = frozenset({"leaky_integrate_fire"})
"""Soma models that hold a PLIF neuron exactly: a multiplicative leak and a hard reset to 0."""

FAN_IN_FIX = ("pass --host-fallback to compute this layer's largest input terms on the host, or narrow the layer "
              "(fewer channels or a smaller kernel)")
NARROW_FIX = ("narrow the layer (fewer channels or a smaller kernel); --host-fallback needs a chip that accepts host "
              "currents, and this one does not")


def fan_in_fix(chip: ChipSpec) -> str:
    """The fix of a fan-in violation: the host can take terms over only on a chip that accepts host currents."""
    return FAN_IN_FIX if chip.host_currents else NARROW_FIX


class ChipConstraintError(SVFormerDeployError):
    """The network breaks the chip's limits; the message lists every violation, one per line."""


@dataclass(frozen=True)
class Violation:
    layer: str
    limit: str
    value: str
    allowed: str
    fix: str
    relation: str = ">"

    def line(self) -> str:
        return f"{self.layer}: {self.limit} {self.value} {self.relation} {self.allowed}; fix: {self.fix}"


def single_neuron_demand(terms: list[TermGeometry], weight_bits: int) -> tuple[int, int]:
    """(input axons, synaptic memory bits) of the neuron with the largest fan-in: no block can need less."""
    axons = 0
    conn = 0
    for g in terms:
        k = g.kernel
        rows = min(k, g.in_shape[1])
        cols = min(k, g.in_shape[2])
        axons += int(g.chan_mask.sum(axis=1).max(initial=0)) * rows * cols
        conn += int(g.fan_in().max(initial=0))
    return axons, conn * weight_bits


def check_layer(layer: ChipLayer, fixed: FixedLayer, terms: list[TermGeometry], chip: ChipSpec) -> list[Violation]:
    """Violations of one layer that no split or placement can cure."""
    out: list[Violation] = []
    fmt = chip.number_format
    name = layer.name
    if chip.neuron_model not in SUPPORTED_SOMA:
        out.append(Violation(name, "neuron model", "PLIF (multiplicative leak 1 - 1/tau, hard reset)",
                             f"the chip's '{chip.neuron_model}' soma",
                             "choose a chip whose soma is SANA-FE's leaky_integrate_fire (e.g. --chip loihi)",
                             relation="is not held by"))
    lo, hi = fmt.weight_range
    if fixed.clipped_weights:
        out.append(Violation(name, "weights outside the fixed-point range",
                             f"{fixed.clipped_weights} weights", f"[{lo}, {hi}] at the smallest exponent 2^0",
                             "retrain with weight decay or a lower firing threshold, or use a chip with wider weights"))
    blo, bhi = fmt.bias_range
    if fixed.clipped_biases:
        out.append(Violation(name, "biases outside the fixed-point range", f"{fixed.clipped_biases} biases",
                             f"[{blo}, {bhi}] ({fmt.bias_bits}-bit mantissa)",
                             "retrain with smaller BatchNorm shifts, or use a chip with a wider bias"))
    if fmt.decay_bits and layer.tau <= 1.0 + 1e-12:
        out.append(Violation(name, "voltage decay", "1/tau = 1 (no memory)", f"{(1 << fmt.decay_bits) - 1}/"
                             f"{1 << fmt.decay_bits}", "retrain with tau > 1"))
    if fixed.vth.bit_length() > fmt.threshold_bits:
        out.append(Violation(name, "threshold", f"2^{fixed.exponent}", f"{fmt.threshold_bits}-bit",
                             "use a smaller weight exponent"))
    if layer.host_terms and not chip.host_currents:
        srcs = ", ".join(sorted({h.source for h in layer.host_terms}))
        out.append(Violation(name, "input currents computed on the host", f"from {srcs}",
                             f"({chip.name} cannot receive host currents)",
                             "map a bundle whose neuromorphic part starts at spikes, or choose a chip with "
                             "host_currents: true", relation="are not accepted"))
    lim = chip.limits
    axons, memory = single_neuron_demand(terms, fmt.bits_per_synapse)
    if lim.axons_in is not None and axons > lim.axons_in:
        out.append(Violation(name, "fan-in (input axons of one neuron)", str(axons),
                             f"{lim.axons_in} input axons per core", fan_in_fix(chip)))
    if lim.synapse_memory_bits is not None and memory > lim.synapse_memory_bits:
        out.append(Violation(name, "synaptic memory of one neuron", f"{memory} bits",
                             f"{lim.synapse_memory_bits} bits per core", fan_in_fix(chip)))
    if lim.distinct_weights_per_neuron is not None:
        n = fixed.distinct_weights_per_neuron()
        if n > lim.distinct_weights_per_neuron:
            out.append(Violation(name, "distinct weights per neuron", str(n),
                                 f"{lim.distinct_weights_per_neuron} (axon types)",
                                 "train with weights constrained to that many values (e.g. ternary), or choose "
                                 "another chip"))
    return out
