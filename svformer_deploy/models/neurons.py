"""Multi-step parametric LIF (PLIF) neurons, as in SVFormer's reference (spikingjelly 0.0.0.0.14).

Per timestep t, per element (decay_input=True, V_reset = 0, hard reset)::

    H[t] = V[t-1] + (X[t] - V[t-1]) / tau          charge (forward-Euler leaky integration)
    S[t] = 1 if H[t] >= V_th else 0                  fire  (Heaviside; equality fires)
    V[t] = H[t] * (1 - S[t])                         hard reset to 0, reset detached from the gradient

with ``1/tau = sigmoid(w)``, one learnable scalar ``w`` per neuron layer, ``V[-1] = 0``, V_th = 1.
The backward pass uses the ATan surrogate ``dS/dH = alpha / (2 (1 + (pi/2 alpha (H - V_th))^2))``.

State never outlives one forward call: a forward over (T, B, ...) starts from V = 0, so no ``reset_net``
is needed between clips (the reference must call it). The multi-step loop and its backward through time
are written out by hand in :class:`_PLIFMultiStep`, which saves one tensor of H per timestep instead of the
autograd graph of every elementwise op.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["SpikingNeuron", "PLIF", "ReLUNeuron", "PLIFParameters", "PLIFState", "plif_step", "plif_multistep",
           "NeuronLayout", "NEURON_LAYOUTS", "plif_gradients"]

NeuronLayout = Literal["chw", "tokens", "heads"]
NEURON_LAYOUTS: tuple[str, ...] = ("chw", "tokens", "heads")


class PLIFParameters(NamedTuple):
    """Parameters of one PLIF layer (norse style): ``inv_tau = 1/tau = sigmoid(w)`` (a scalar tensor or float,
    in the dtype the model multiplies by) and the firing threshold ``v_threshold``."""

    inv_tau: Tensor | float
    v_threshold: float = 1.0


class PLIFState(NamedTuple):
    """State after one PLIF step: ``v`` the membrane after reset (carried to the next step) and ``h`` the
    membrane before reset (the value compared with V_th; the tie recorder reads it)."""

    v: Tensor
    h: Tensor


def plif_step(x: Tensor, state: PLIFState | None, params: PLIFParameters) -> tuple[Tensor, PLIFState]:
    """One PLIF timestep: ``(spikes, new state)``; ``state=None`` is the zero state of the first frame.

    ``H = V + (X - V) * inv_tau`` (a separate rounded multiply and add, as the multistep kernel rounds);
    ``S = H >= V_th`` (equality fires); ``V' = H`` where ``S = 0``, else 0 (hard reset). ``spikes`` has the
    dtype of ``x`` and values in {0, 1}. This is the reference of the training kernel, the ONNX
    ``Scan`` body and the tie recorder.
    """
    v = torch.zeros_like(x) if state is None else state.v
    h = v + (x - v) * params.inv_tau
    fired = h >= params.v_threshold
    return fired.to(x.dtype), PLIFState(h.masked_fill(fired, 0.0), h)


def plif_gradients(x_seq: Tensor, w: Tensor, grad_s: Tensor, v_threshold: float = 1.0,
                   alpha: float = 2.0) -> tuple[Tensor, Tensor]:
    """``(dL/dX, dL/dw)`` of a PLIF layer over ``x_seq`` (T, ...) for the upstream gradient ``grad_s`` = dL/dS,
    written with differentiable out-of-place torch operations, so that autograd can differentiate the gradient
    itself (gradient penalties, meta-learning: ``create_graph=True``). The same arithmetic as the hand-written
    BPTT of :class:`_PLIFMultiStep` and the fused kernels (detach_reset, ATan surrogate), per element,
    t = T-1 .. 0, with ``k = sigmoid(w)`` in the dtype of ``x_seq`` and G_V = 0 after the last step::

        sg(H) = alpha/2 / (1 + (pi/2 alpha (H[t] - V_th))^2)
        G_H = sg(H[t]) dL/dS[t] + (1 - S[t]) G_V        dL/dX[t] = G_H k        G_V <- G_H (1 - k)
        dL/dk = sum_t sum (X[t] - V[t-1]) G_H            dL/dw = dL/dk k (1 - k)

    H[t] is recomputed from X and k, so a second derivative sees how the surrogate sg(H) moves with X and w
    (d sg/dH); S and the reset mask are piecewise constant and contribute nothing, exactly as for an autograd
    PLIF whose Heaviside has this surrogate as its backward. Differentiable to any order.
    """
    k = torch.sigmoid(w).to(x_seq.dtype)
    steps = x_seq.shape[0]
    if steps == 0:
        return torch.zeros_like(x_seq), (w * 0).sum()
    hs, fired = [], []
    v = torch.zeros_like(x_seq[0])
    for t in range(steps):
        h = (x_seq[t] - v) * k + v
        hs.append(h)
        fired.append(h >= v_threshold)
        v = h.masked_fill(fired[t], 0.0)
    grad_v = torch.zeros_like(x_seq[0])
    grad_k = torch.zeros((), dtype=torch.float64, device=x_seq.device)
    grad_x: list[Tensor] = [x_seq[0]] * steps
    for t in range(steps - 1, -1, -1):
        sg = ((hs[t] - v_threshold) * (math.pi / 2 * alpha)).square().add(1.0).reciprocal().mul(alpha / 2)
        g = sg * grad_s[t] + grad_v.masked_fill(fired[t], 0.0)
        dk = x_seq[t] - hs[t - 1].masked_fill(fired[t - 1], 0.0) if t > 0 else x_seq[t]
        grad_k = grad_k + (dk * g).sum(dtype=torch.float64)
        grad_x[t] = g * k
        grad_v = g * (1 - k)
    return torch.stack(grad_x), (grad_k * (k * (1 - k))).to(w.dtype)


class _PLIFMultiStep(torch.autograd.Function):
    """PLIF over T steps with a hand-written BPTT (detach_reset=True, ATan surrogate). A backward that must itself
    be differentiable (``create_graph=True``) runs :func:`plif_gradients` instead, from the saved inputs."""

    @staticmethod
    def forward(ctx, x_seq: Tensor, w: Tensor, v_threshold: float, alpha: float) -> Tensor:  # type: ignore[override]
        # detached: eager runs this without grad anyway; dynamo < 2.5 traces it with grad, and then refuses out=
        x = x_seq.detach().contiguous()
        k = torch.sigmoid(w.detach()).to(x.dtype)
        h_seq = torch.empty_like(x, memory_format=torch.contiguous_format)
        v = torch.zeros_like(x[0])
        for t in range(x.shape[0]):
            h = h_seq[t]
            # H = V + (X - V) * k, as separate rounded mul and add (no FMA): rounds exactly as the reference does
            torch.sub(x[t], v, out=h).mul_(k).add_(v)
            v = h.masked_fill(h >= v_threshold, 0.0)
        # the inputs themselves (not a contiguous copy): a second-order graph reaches X and w through them
        ctx.save_for_backward(x_seq, w, h_seq)
        ctx.v_threshold = v_threshold
        ctx.alpha = alpha
        return (h_seq >= v_threshold).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_s: Tensor):  # type: ignore[override]
        x_seq, w, h_seq = ctx.saved_tensors
        v_th, alpha = ctx.v_threshold, ctx.alpha
        if torch.is_grad_enabled():  # create_graph=True: the gradient must be differentiable itself
            return (*plif_gradients(x_seq, w, grad_s, v_th, alpha), None, None)
        x_seq = x_seq.contiguous()
        k = torch.sigmoid(w.detach()).to(x_seq.dtype)
        grad_s = grad_s.contiguous()
        fired = h_seq >= v_th
        # dS/dH of the ATan surrogate for all steps at once; this buffer then becomes dL/dH, then dL/dX
        grad_h = (h_seq - v_th).mul_(math.pi / 2 * alpha).square_().add_(1.0).reciprocal_().mul_(alpha / 2)
        grad_v = torch.zeros_like(x_seq[0])
        grad_k = torch.zeros((), dtype=torch.float64, device=x_seq.device)
        one_minus_k = 1 - k
        for t in range(x_seq.shape[0] - 1, -1, -1):
            # dL/dH = dL/dS * dS/dH + dL/dV * dV/dH, with dV/dH = 1 - S (the reset itself is detached)
            g = grad_h[t].mul_(grad_s[t]).add_(grad_v.masked_fill_(fired[t], 0.0))
            # dH/dk = X[t] - V[t-1], with V[t-1] = H[t-1] (1 - S[t-1]) and V[-1] = 0
            dk = x_seq[t] - h_seq[t - 1].masked_fill(fired[t - 1], 0.0) if t > 0 else x_seq[t].clone()
            grad_k += dk.mul_(g).sum(dtype=torch.float64)
            grad_v = g * one_minus_k
        grad_w = (grad_k * (k * (1 - k))).to(w.dtype)
        return grad_h.mul_(k), grad_w, None, None


def _forward_op(kernel: str):  # noqa: ANN202
    """The fused forward op of ``kernel`` (``"cpp"``: ``csrc/plif.cpp``; ``"triton"``: :mod:`._plif_triton`)."""
    if kernel == "cpp":
        return torch.ops.svformer_deploy.plif_forward
    from svformer_deploy.models import _plif_triton

    return _plif_triton.FORWARD


def _backward_op(kernel: str):  # noqa: ANN202
    if kernel == "cpp":
        return torch.ops.svformer_deploy.plif_backward
    from svformer_deploy.models import _plif_triton

    return _plif_triton.BACKWARD


class _PLIFFused(torch.autograd.Function):
    """:class:`_PLIFMultiStep` as fused kernels: the C++ ones of ``csrc/plif.cpp`` on CPU (``kernel="cpp"``), the
    Triton ones of :mod:`._plif_triton` on CUDA (``kernel="triton"``), each a registered torch operator
    (``torch.ops.svformer_deploy``) with a fake implementation, so ``torch.compile`` traces through them. The
    forward over all T steps is one parallel loop over elements, and so is the BPTT backward, which recomputes H
    from the saved X instead of storing it. Same rounded operations as the reference: identical spikes;
    gradients equal up to the order in which dL/dw is summed (float64). With ``with_bits`` (C++ only) the forward
    also writes the spikes as bits for :mod:`.spike_packing`, in the same pass, and hands them over with the
    spikes. A backward that must itself be differentiable (``create_graph=True``) runs
    :func:`plif_gradients` instead, from the saved inputs."""

    @staticmethod
    def forward(ctx, x_seq: Tensor, w: Tensor, v_threshold: float, alpha: float,  # type: ignore[override]
                kernel: str, with_bits: bool = False) -> Tensor:
        x = x_seq.contiguous()
        k = torch.sigmoid(w.detach()).to(x.dtype)
        ctx.save_for_backward(x_seq, w)
        ctx.v_threshold, ctx.alpha, ctx.kernel = v_threshold, alpha, kernel
        if not with_bits:
            return _forward_op(kernel)(x, k, v_threshold)
        from svformer_deploy.models.spike_packing import attach_bits

        s, bits = torch.ops.svformer_deploy.plif_forward_bits(x, k, v_threshold)
        return attach_bits(s, bits)

    @staticmethod
    def backward(ctx, grad_s: Tensor):  # type: ignore[override]
        x_seq, w = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the gradient must be differentiable itself
            return (*plif_gradients(x_seq, w, grad_s, ctx.v_threshold, ctx.alpha), None, None, None, None)
        x = x_seq.contiguous()
        k = torch.sigmoid(w.detach()).to(x.dtype)
        grad_x, grad_k = _backward_op(ctx.kernel)(x, grad_s.contiguous(), k, ctx.v_threshold, ctx.alpha)
        return grad_x, (grad_k * (k * (1 - k))).to(w.dtype), None, None, None, None


_CPU_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_CUDA_DTYPES = (torch.float32, torch.float64, torch.float16)  # bfloat16 rounding not verified: reference path


def _constant_to_compile(fn):  # noqa: ANN001, ANN202
    """``torch.compiler.assume_constant_result`` where torch has it (2.1+; the Lava side environment's torch too)."""
    mark = getattr(getattr(torch, "compiler", None), "assume_constant_result", None)
    return fn if mark is None else mark(fn)


@_constant_to_compile
def _fused_kernel_for(device_type: str, dtype: torch.dtype) -> str | None:
    """``"cpp"`` or ``"triton"``: the fused kernels that serve tensors of ``device_type`` and ``dtype``, or None
    (use the reference). A constant to ``torch.compile`` (evaluated once while tracing, never traced into)."""
    if device_type == "cpu" and dtype in _CPU_DTYPES:
        from svformer_deploy.models._plif_ext import fused_plif_available

        return "cpp" if fused_plif_available() else None
    if device_type == "cuda" and dtype in _CUDA_DTYPES:
        try:
            from svformer_deploy.models import _plif_triton  # noqa: F401 (registers the Triton operators)
        except ImportError:  # no Triton
            return None
        return "triton"
    return None


def _compiling() -> bool:
    """Whether ``torch.compile`` is tracing this call (``torch.compiler.is_compiling``, torch >= 2.3)."""
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(is_compiling and is_compiling())


def _fused_kernel(x_seq: Tensor) -> str | None:
    """The fused kernels for ``x_seq``'s device and dtype (:func:`_fused_kernel_for`), or None."""
    return _fused_kernel_for(x_seq.device.type, x_seq.dtype)


def plif_multistep(x_seq: Tensor, w: Tensor, v_threshold: float = 1.0, alpha: float = 2.0) -> Tensor:
    """Spikes of a PLIF layer over a whole sequence ``x_seq`` of shape (T, ...), starting from V = 0.

    Runs the fused kernels (:class:`_PLIFFused`: C++ on CPU when they could be built, Triton on CUDA), else the
    pure-torch :class:`_PLIFMultiStep`; all give the same spikes. Gradients of any order (a second-order graph
    runs :func:`plif_gradients`). Under ``torch.compile`` the fused kernels are traced as the operators they are
    (one graph for a whole model, no graph break per layer).
    """
    kernel = _fused_kernel(x_seq)
    if kernel is None:
        return _PLIFMultiStep.apply(x_seq, w, float(v_threshold), float(alpha))
    with_bits = False
    if kernel == "cpp" and not _compiling() and x_seq.dim() > 0 and x_seq.shape[0] > 0 \
            and (x_seq.numel() // x_seq.shape[0]) % 8 == 0:
        from svformer_deploy.models.spike_packing import packing_now

        with_bits = packing_now()
    return _PLIFFused.apply(x_seq, w, float(v_threshold), float(alpha), kernel, with_bits)


class SpikingNeuron(nn.Module):
    """Base class of every neuron layer: input (T, B, ...) real currents, output (T, B, ...) of the same shape.

    Spike recording (:func:`svformer_deploy.models.record_spikes`), the energy counter and the exporters
    find neuron layers by this type. ``layout`` declares how the layer's (T, B, ...) tensors are arranged, so no
    consumer has to guess it from the layer's name: ``"chw"`` (T, B, C, H, W) feature maps, ``"tokens"``
    (T, B, N, C) with N = H*W tokens of a frame, ``"heads"`` (T, B, heads, N, d) with channel = head * d + i.
    """

    v_threshold: float = 1.0
    v_reset: float = 0.0

    def __init__(self, layout: NeuronLayout = "chw") -> None:
        super().__init__()
        if layout not in NEURON_LAYOUTS:
            raise ValueError(f"neuron layout {layout!r} is not one of {NEURON_LAYOUTS}")
        self.layout: NeuronLayout = layout


class PLIF(SpikingNeuron):
    """Multi-step parametric LIF layer (see the module docstring for the equations).

    Args:
        tau_init: initial time constant; ``w = -ln(tau_init - 1)`` so that ``sigmoid(w) = 1/tau_init``.
        v_threshold: firing threshold V_th (spike when H >= V_th).
        alpha: ATan surrogate sharpness.
        layout: arrangement of the layer's tensors (see :class:`SpikingNeuron`).

    Shape: input and output (T, B, ...); output values are exactly 0.0 or 1.0.
    """

    def __init__(self, tau_init: float = 2.0, v_threshold: float = 1.0, alpha: float = 2.0,
                 layout: NeuronLayout = "chw") -> None:
        super().__init__(layout)
        self.w = nn.Parameter(torch.tensor(-math.log(tau_init - 1.0)))
        self.v_threshold = float(v_threshold)
        self.alpha = float(alpha)

    def parameters_step(self) -> PLIFParameters:
        """The layer's :class:`PLIFParameters` for :func:`plif_step` (``inv_tau = sigmoid(w)`` in float32)."""
        return PLIFParameters(torch.sigmoid(self.w.detach()), self.v_threshold)

    @property
    def tau(self) -> float:
        """The current membrane time constant, ``1 / sigmoid(w)`` (in timesteps)."""
        return float(1.0 / torch.sigmoid(self.w.detach()))

    def forward(self, x: Tensor) -> Tensor:
        return plif_multistep(x, self.w, self.v_threshold, self.alpha)

    def extra_repr(self) -> str:
        return f"tau={self.tau:.4f}, v_threshold={self.v_threshold}, v_reset=0, alpha={self.alpha}"


class ReLUNeuron(SpikingNeuron):
    """The ANN twin's activation: ``max(x, 0)`` elementwise, in place of a PLIF layer (no state, no spikes)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)
