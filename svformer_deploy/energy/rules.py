"""Counting rules: which operation class every executed aten op belongs to, and how many of them it performs.

Every rule here is stated in its docstring and in ``docs/energy.md``; tests check them against hand counts.

Operand kinds (decided per call, on the values actually passed):

* **weight**: the tensor shares storage with a parameter or buffer of the counted model (weights are
  treated as dense: a zero weight is still a synapse).
* **binary**: an activation whose every element is exactly 0 or 1 (spikes).
* **real**: any other activation, including integer-valued but non-binary ones such as spike sums
  {0, 1, 2} or ``K^T V`` counts. *Rule for non-binary integers:* they are counted as real numbers.

Synaptic ops (convolution, linear/addmm/mm, bmm) with operands A (activation) and B:

* neither operand binary -> ``mac``: dense multiply-accumulates, ``prod(out) * (C_in / groups) * prod(kernel)``
  for a convolution, ``M * K * N`` for a (M, K) x (K, N) product (bias excluded, as in
  ``FlopCounterMode`` and fvcore);
* binary activation x weight -> ``ac``: exact synaptic events, one per (non-zero input, weight, output)
  term of the sum, i.e. the in-bounds fan-out of every non-zero input element (a convolution's fan-out
  map is ``conv_transpose(ones(out), ones(weight))``, so borders, stride, dilation and groups are exact);
* activation x activation with at least one binary operand -> ``spike_product``: one accumulate per
  coincident non-zero pair ``(A[m, k] != 0) and (B[k, n] != 0)``. For the attention's ``K^T V`` (both
  binary) these are the coincident 1-1 pairs; for ``Q (K^T V)`` (binary Q, integer K^T V) each pair adds
  one integer of ``K^T V`` to the output.

Element-wise ops outside neuron layers: ``bn_mul`` + ``bn_add`` (eval BatchNorm, one multiply and one add per
element; ``bn_folded`` instead, costing nothing, when folding is requested and the BN is time-invariant),
``bias_add`` (bias of a linear/conv), ``residual_add`` (sum of two activations of the same shape),
``scale_mul`` (multiply by a scalar, e.g. the attention's x0.125), ``mul``/``add`` (other element-wise
products and sums/differences), ``activation`` (ReLU-like max(x, 0): one comparison per element).

Neuron layers (:class:`~svformer_deploy.models.neurons.SpikingNeuron`) are counted by a module rule: a PLIF
update per element per timestep is ``1 neuron_mul`` ((X - V) / tau as a multiply by 1/tau) and
``3 neuron_add`` (X - V, V + ..., the threshold comparison H >= V_th); the hard reset is a select (free).
A ReLU neuron (ANN twin) is ``1 activation`` per element. The aten ops executed inside a neuron layer are
listed under ``internal`` (their timestep is hidden by a per-step ``select``).

Data movement (views, reshapes, permutes, copies, concatenation, dtype casts, allocation) is ``free``.
Any other op is listed as ``uncounted`` with its number of calls and output elements.
"""

from __future__ import annotations

import torch

__all__ = ["OP_CLASSES", "FREE_OPS", "SYNAPTIC_CLASSES", "PRIMITIVE_OF"]

aten = torch.ops.aten

#: Every op class a count can carry, with the primitive whose energy it costs.
PRIMITIVE_OF: dict[str, str] = {
    "mac": "mac",
    "ac": "ac",
    "spike_product": "ac",
    "neuron_mul": "mul",
    "neuron_add": "add",
    "bn_mul": "mul",
    "bn_add": "add",
    "bn_folded": "none",
    "bias_add": "add",
    "residual_add": "add",
    "scale_mul": "mul",
    "mul": "mul",
    "add": "add",
    "activation": "add",
}
OP_CLASSES: tuple[str, ...] = tuple(PRIMITIVE_OF)
SYNAPTIC_CLASSES: tuple[str, ...] = ("mac", "ac", "spike_product")

#: Ops that only move, view or allocate data (counted as free).
FREE_OPS = {
    aten.view, aten._unsafe_view, aten.reshape, aten.permute, aten.transpose, aten.t, aten.expand,
    aten.select, aten.slice, aten.split, aten.split_with_sizes, aten.unbind, aten.squeeze, aten.unsqueeze,
    aten.flatten, aten.unflatten, aten.clone, aten.contiguous, aten.copy_, aten._to_copy, aten.to,
    aten.empty, aten.empty_like, aten.empty_strided, aten.zeros, aten.zeros_like, aten.ones, aten.ones_like,
    aten.full, aten.full_like, aten.fill_, aten.zero_, aten.detach, aten.alias, aten.cat, aten.stack,
    aten.lift_fresh, aten.lift_fresh_copy, aten.new_empty, aten.new_zeros, aten.new_ones, aten.as_strided,
    aten.index_select, aten.narrow, aten.movedim, aten.constant_pad_nd, aten.roll, aten.pad,
    aten.masked_fill, aten.where, aten.arange, aten.scalar_tensor, aten._local_scalar_dense,
    aten.repeat, aten.dropout, aten.native_dropout,
}
