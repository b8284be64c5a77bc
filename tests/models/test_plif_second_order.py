"""Second-order gradients through PLIF layers (issue 26, item 3; pytorch #58509, #76185).

The case: a gradient penalty through one PLIF layer, ``||dL/dX||^2`` differentiated again. Before, the fused
kernel's backward was not differentiable: d(penalty)/dX came back None with a warning that no autograd kernel was
registered for ``svformer_deploy::plif_backward`` (and through the whole model only some parameters got a gradient);
the pure-torch path failed inside autograd. Now both run :func:`plif_gradients` when a second-order graph is
asked for, and every result is checked against an all-autograd PLIF with the same surrogate and against finite
differences (``torch.autograd.gradgradcheck``, float64).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from svformer_deploy.models import PLIF, create_model, neurons
from svformer_deploy.models.neurons import _fused_kernel, _PLIFFused, _PLIFMultiStep, plif_gradients


class _ATanSpike(torch.autograd.Function):
    """Heaviside forward (equality fires), ATan surrogate backward written with differentiable ops."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, alpha: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(u)
        ctx.alpha = alpha
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (u,) = ctx.saved_tensors
        return grad * (ctx.alpha / 2) / (1 + (math.pi / 2 * ctx.alpha * u) ** 2), None


def autograd_plif(x: torch.Tensor, w: torch.Tensor, v_threshold: float = 1.0, alpha: float = 2.0) -> torch.Tensor:
    """PLIF with every step recorded by autograd (snntorch / spikingjelly style): H = V + (X - V) k, S = Heaviside
    with the ATan surrogate, V = H (1 - S) with the reset detached."""
    k = torch.sigmoid(w).to(x.dtype)
    v = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        h = v + (x[t] - v) * k
        s = _ATanSpike.apply(h - v_threshold, alpha)
        out.append(s)
        v = h * (1 - s.detach())
    return torch.stack(out)


def _paths() -> dict:
    paths = {"reference": lambda x, w: _PLIFMultiStep.apply(x, w, 1.0, 2.0)}
    kernel = _fused_kernel(torch.zeros(1, 8))
    if kernel is not None:
        paths["fused"] = lambda x, w: _PLIFFused.apply(x, w, 1.0, 2.0, kernel, False)
    return paths


PATHS = _paths()


def _currents(shape=(6, 4, 40), dtype=torch.float64, seed: int = 0, margin: float = 0.0) -> torch.Tensor:
    """Currents that make the layer fire now and then; with ``margin``, none puts H within ``margin`` of the
    threshold (finite differences then never step across it)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) + 0.8).to(dtype)
    if margin:
        k = torch.sigmoid(torch.tensor(0.3, dtype=torch.float64)).to(dtype)
        v = torch.zeros_like(x[0])
        for t in range(x.shape[0]):
            h = v + (x[t] - v) * k
            near = (h - 1.0).abs() < margin
            x[t] = torch.where(near, x[t] + 4 * margin / k, x[t])
            h = v + (x[t] - v) * k
            v = h.masked_fill(h >= 1.0, 0.0)
    return x


def _penalty_grads(fn, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """d/dX and d/dw of the gradient penalty ||d(sum(c S))/dX||^2 (c a fixed ramp, so every step matters)."""
    x = x.clone().requires_grad_()
    s = fn(x, w)
    c = torch.linspace(0.1, 1.0, s.numel(), dtype=s.dtype).view_as(s)
    (gx,) = torch.autograd.grad((c * s).sum(), x, create_graph=True)
    penalty = gx.square().sum() + gx.sum()
    return torch.autograd.grad(penalty, (x, w), allow_unused=True)


@pytest.mark.parametrize("path", list(PATHS))
def test_gradient_penalty_matches_the_all_autograd_plif(path):
    x = _currents()
    w = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    want_x, want_w = _penalty_grads(autograd_plif, x, w)
    assert float(want_x.abs().sum()) > 1.0 and abs(float(want_w)) > 1e-3  # the case is not trivially zero
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "autograd kernel was not registered" warning, nor any other
        got_x, got_w = _penalty_grads(PATHS[path], x, w)
    assert got_x is not None and got_w is not None
    torch.testing.assert_close(got_x, want_x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_w, want_w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("path", list(PATHS))
def test_first_order_gradient_of_a_second_order_graph_equals_the_kernels(path):
    """With create_graph=True the first-order gradient itself is computed by plif_gradients: the same values as
    the hand-written / fused backward (float32, the training dtype)."""
    x = _currents(dtype=torch.float32).requires_grad_()
    w = torch.tensor(-0.4, requires_grad=True)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    plain = torch.autograd.grad(PATHS[path](x, w), (x, w), grad)
    graph = torch.autograd.grad(PATHS[path](x, w), (x, w), grad, create_graph=True)
    assert graph[0].requires_grad and graph[1].requires_grad
    torch.testing.assert_close(graph[0], plain[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(graph[1], plain[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("path", list(PATHS))
def test_gradgradcheck_float64(path):
    x = _currents((4, 2, 3), margin=1e-3).requires_grad_()
    w = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert 0 < float(PATHS[path](x, w).mean()) < 1
    assert torch.autograd.gradgradcheck(PATHS[path], (x, w), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_plif_gradients_is_the_autograd_plifs_gradient_to_third_order():
    x = _currents((5, 7), margin=1e-3).requires_grad_()
    w = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    grad = torch.linspace(-1, 1, x.numel(), dtype=torch.float64).view_as(x)
    gx, gw = plif_gradients(x, w, grad)
    ax, aw = torch.autograd.grad(autograd_plif(x, w), (x, w), grad, create_graph=True)
    torch.testing.assert_close((gx, gw), (ax, aw), rtol=1e-12, atol=1e-12)
    mine = torch.autograd.grad(gx.square().sum() + gw, (x, w), create_graph=True)
    theirs = torch.autograd.grad(ax.square().sum() + aw, (x, w), create_graph=True)
    torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    third = torch.autograd.grad(mine[0].sum() + mine[1], (x, w), allow_unused=True)
    third_ref = torch.autograd.grad(theirs[0].sum() + theirs[1], (x, w), allow_unused=True)
    torch.testing.assert_close(third, third_ref, rtol=1e-12, atol=1e-12)


def _model_penalty_grads(model: torch.nn.Module, clips: torch.Tensor) -> dict[str, torch.Tensor | None]:
    clips = clips.clone().requires_grad_()
    (g,) = torch.autograd.grad(model(clips).logsumexp(-1).sum(), clips, create_graph=True)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(g.square().sum(), list(params.values()), allow_unused=True)
    return dict(zip(params, grads))


def test_whole_model_gradient_penalty_reaches_every_parameter_as_with_autograd_plif(monkeypatch):
    """Before: only some parameters got a gradient (the PLIF layers' second-order paths were cut). Now every
    parameter that the all-autograd model gives a gradient gets the same gradient."""
    torch.manual_seed(0)
    model = create_model("svformer_tiny", img_size=32, num_frames=2).double().train()
    clips = torch.randn(2, *model.config.input_shape, dtype=torch.float64)
    got = _model_penalty_grads(model, clips)
    monkeypatch.setattr(PLIF, "forward", lambda self, x: autograd_plif(x, self.w, self.v_threshold, self.alpha))
    want = _model_penalty_grads(model, clips)
    reached = [n for n, g in want.items() if g is not None]
    assert len(reached) > 0.9 * len(want)
    assert [n for n, g in got.items() if g is not None] == reached
    for name in reached:
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-12, msg=name)


def test_the_neuron_entry_point_routes_second_order_graphs_correctly(monkeypatch):
    """plif_multistep (what every PLIF layer calls), on whichever kernel this machine has, and on the reference."""
    x = _currents()
    w = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    want = _penalty_grads(autograd_plif, x, w)
    torch.testing.assert_close(_penalty_grads(neurons.plif_multistep, x, w), want, rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(neurons, "_fused_kernel", lambda x: None)
    torch.testing.assert_close(_penalty_grads(neurons.plif_multistep, x, w), want, rtol=1e-12, atol=1e-12)
