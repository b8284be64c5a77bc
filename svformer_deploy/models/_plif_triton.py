"""The fused PLIF kernels for CUDA, in Triton: the arithmetic of ``csrc/plif.cpp`` (and of the pure-torch
reference), one program per block of elements looping over T.

Every operation is rounded to the tensor's dtype before the next one (computed in float32, or float64 for
float64 tensors; for +, -, *, / on float16/bfloat16 that equals rounding each op in the dtype) and the kernels
are compiled with ``enable_fp_fusion=False`` (no fused multiply-add). The backward recomputes H into a scratch
buffer, then runs backwards through time; dL/dk is summed per program in float64, then over programs in order.
With ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors (how the test suite checks them without a GPU).

The neurons call them as :data:`FORWARD` / :data:`BACKWARD`: on torch >= 2.4 the operators
``torch.ops.svformer_deploy.plif_forward_triton`` / ``plif_backward_triton`` (``torch.library.custom_op``, with
fake implementations), so that ``torch.compile`` traces them; ``k`` may be a float or a one-element tensor (then it
stays on the device: no host sync).
"""

# no `from __future__ import annotations`: Triton 3.0 (paired with torch 2.4) reads tl.constexpr, and torch 2.4's
# custom_op the types, from the annotations themselves, and neither accepts them as strings
import math

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["plif_forward", "plif_backward", "plif_forward_op", "plif_backward_op", "FORWARD", "BACKWARD", "BLOCK"]

BLOCK = 512


@triton.jit
def _round(a, DT: tl.constexpr, CT: tl.constexpr):
    return a.to(DT).to(CT)


@triton.jit
def _forward_kernel(X, S, P, N, T, BLOCK: tl.constexpr, DT: tl.constexpr, CT: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    kk = tl.load(P)
    th = tl.load(P + 1)
    v = tl.zeros([BLOCK], dtype=CT)
    for t in range(T):
        x = tl.load(X + t * N + offs, mask=mask, other=0.0).to(CT)
        d = _round(x - v, DT, CT)
        m = _round(d * kk, DT, CT)
        h = _round(m + v, DT, CT)
        fired = h >= th
        tl.store(S + t * N + offs, tl.where(fired, 1.0, 0.0).to(DT), mask=mask)
        v = tl.where(fired, 0.0, h).to(CT)


@triton.jit
def _backward_kernel(X, GS, GX, H, PARTIAL, P, N, T, BLOCK: tl.constexpr, DT: tl.constexpr, CT: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    kk = tl.load(P)
    th = tl.load(P + 1)
    c1 = tl.load(P + 2)
    c2 = tl.load(P + 3)
    one_minus_k = _round(1.0 - kk, DT, CT)
    v = tl.zeros([BLOCK], dtype=CT)
    for t in range(T):  # recompute H (the forward's arithmetic) into the scratch buffer
        x = tl.load(X + t * N + offs, mask=mask, other=0.0).to(CT)
        h = _round(_round(_round(x - v, DT, CT) * kk, DT, CT) + v, DT, CT)
        tl.store(H + t * N + offs, h.to(DT), mask=mask)
        v = tl.where(h >= th, 0.0, h).to(CT)
    gv = tl.zeros([BLOCK], dtype=CT)
    acc = tl.zeros([BLOCK], dtype=tl.float64)
    for i in range(T):
        t = T - 1 - i
        h = tl.load(H + t * N + offs, mask=mask, other=0.0).to(CT)
        a = _round(h - th, DT, CT)
        a = _round(a * c1, DT, CT)
        a = _round(a * a, DT, CT)
        a = _round(a + 1.0, DT, CT)
        a = _round(1.0 / a, DT, CT)
        a = _round(a * c2, DT, CT)
        gs = tl.load(GS + t * N + offs, mask=mask, other=0.0).to(CT)
        g = _round(_round(a * gs, DT, CT) + tl.where(h >= th, 0.0, gv).to(CT), DT, CT)
        x = tl.load(X + t * N + offs, mask=mask, other=0.0).to(CT)
        if t > 0:
            hp = tl.load(H + (t - 1) * N + offs, mask=mask, other=0.0).to(CT)
            dk = _round(x - tl.where(hp >= th, 0.0, hp).to(CT), DT, CT)
        else:
            dk = x
        acc += tl.where(mask, _round(dk * g, DT, CT), 0.0).to(tl.float64)
        tl.store(GX + t * N + offs, _round(g * kk, DT, CT).to(DT), mask=mask)
        gv = _round(g * one_minus_k, DT, CT)
    tl.store(PARTIAL + pid, tl.sum(acc, axis=0))


_TL = {torch.float32: tl.float32, torch.float64: tl.float64, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def _types(x: Tensor) -> tuple:
    return _TL[x.dtype], tl.float64 if x.dtype == torch.float64 else tl.float32


def _params(x: Tensor, k: Tensor | float, *values: float) -> Tensor:
    """Scalars for the kernels in the op-math dtype (float64 for float64 tensors, else float32), as torch rounds
    Python scalars; ``k`` arrives already rounded to the tensor's dtype (a float, or a one-element tensor that
    stays on the device)."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    rest = torch.tensor(values, dtype=dtype, device=x.device)
    if isinstance(k, Tensor):
        return torch.cat((k.reshape(1).to(device=x.device, dtype=dtype), rest))
    return torch.cat((torch.tensor([k], dtype=dtype, device=x.device), rest))


def plif_forward(x: Tensor, k: Tensor | float, v_threshold: float) -> Tensor:
    """Spikes of a contiguous (T, ...) tensor ``x`` (see ``csrc/plif.cpp`` for the equations)."""
    s = torch.empty_like(x)
    T = x.shape[0]
    N = x.numel() // T if T else 0
    if N:
        dt, ct = _types(x)
        _forward_kernel[(triton.cdiv(N, BLOCK),)](x, s, _params(x, k, v_threshold), N, T, BLOCK=BLOCK, DT=dt, CT=ct,
                                                  enable_fp_fusion=False)
    return s


def plif_backward(x: Tensor, grad_s: Tensor, k: Tensor | float, v_threshold: float,
                  alpha: float) -> tuple[Tensor, Tensor]:
    """(dL/dx, dL/dk as a float64 scalar) for contiguous ``x`` and ``grad_s``."""
    gx = torch.empty_like(x)
    T = x.shape[0]
    N = x.numel() // T if T else 0
    if not N:
        return gx, torch.zeros((), dtype=torch.float64, device=x.device)
    programs = triton.cdiv(N, BLOCK)
    partial = torch.zeros(programs, dtype=torch.float64, device=x.device)
    scratch = torch.empty_like(x)
    dt, ct = _types(x)
    params = _params(x, k, v_threshold, math.pi / 2 * alpha, alpha / 2)
    _backward_kernel[(programs,)](x, grad_s, gx, scratch, partial, params, N, T, BLOCK=BLOCK, DT=dt, CT=ct,
                                  enable_fp_fusion=False)
    return gx, partial.sum()


def _forward_contiguous(x: Tensor, k: Tensor, v_threshold: float) -> Tensor:
    """:func:`plif_forward` for any strides in, contiguous spikes out."""
    return plif_forward(x.contiguous(), k, v_threshold)


def _backward_contiguous(x: Tensor, grad_s: Tensor, k: Tensor, v_threshold: float,
                         alpha: float) -> tuple[Tensor, Tensor]:
    """:func:`plif_backward` for any strides in: (dL/dx contiguous, dL/dk one float64 value)."""
    return plif_backward(x.contiguous(), grad_s.contiguous(), k, v_threshold, alpha)


if hasattr(torch.library, "custom_op"):  # torch >= 2.4: operators with fake implementations, traced by torch.compile
    plif_forward_op = torch.library.custom_op("svformer_deploy::plif_forward_triton", mutates_args=())(
        _forward_contiguous)
    plif_backward_op = torch.library.custom_op("svformer_deploy::plif_backward_triton", mutates_args=())(
        _backward_contiguous)

    @plif_forward_op.register_fake
    def _(x: Tensor, k: Tensor, v_threshold: float) -> Tensor:
        return x.new_empty(x.shape)

    @plif_backward_op.register_fake
    def _(x: Tensor, grad_s: Tensor, k: Tensor, v_threshold: float, alpha: float) -> tuple[Tensor, Tensor]:
        return x.new_empty(x.shape), x.new_empty((), dtype=torch.float64)

    FORWARD, BACKWARD = torch.ops.svformer_deploy.plif_forward_triton, torch.ops.svformer_deploy.plif_backward_triton
else:  # the same kernels as plain functions (torch.compile then breaks its graph at them)
    plif_forward_op, plif_backward_op = _forward_contiguous, _backward_contiguous
    FORWARD, BACKWARD = plif_forward_op, plif_backward_op
