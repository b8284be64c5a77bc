import math

import pytest
import torch
from spikingjelly.activation_based import neuron, surrogate

from svformer_deploy.models import PLIF, PLIFParameters, plif_step


def _sj_plif(tau: float):
    n = neuron.ParametricLIFNode(init_tau=tau, surrogate_function=surrogate.ATan(), detach_reset=True,
                                 step_mode="m", backend="torch")
    return n


def test_hand_computed_sequence_with_tie_and_reset():
    # tau = 2 -> 1/tau = 0.5; H = V + (X - V) / 2
    lif = PLIF(tau_init=2.0)
    x = torch.tensor([1.5, 0.6, 2.0, 2.0, 0.0]).reshape(5, 1)
    # t0: H = 0.75 -> no spike, V = 0.75
    # t1: H = 0.75 + (0.6 - 0.75)/2 = 0.675 -> no spike
    # t2: H = 0.675 + (2 - 0.675)/2 = 1.3375 -> spike, V = 0
    # t3: H = 0 + 2/2 = 1.0 exactly -> spike (H >= V_th fires on equality), V = 0
    # t4: H = 0 -> no spike
    assert lif(x).flatten().tolist() == [0.0, 0.0, 1.0, 1.0, 0.0]
    assert lif.tau == pytest.approx(2.0)


def test_step_function_matches_multistep():
    lif = PLIF(tau_init=3.0)
    x = torch.randn(6, 4, 5) * 2
    state, outs = None, []
    for t in range(6):
        s, state = plif_step(x[t], state, lif.parameters_step())
        outs.append(s)
    assert torch.equal(torch.stack(outs), lif(x).detach())


def test_step_hand_computed_tie_and_hard_reset():
    p = PLIFParameters(inv_tau=0.5, v_threshold=1.0)
    s, state = plif_step(torch.tensor([2.0, 1.0, 3.0]), None, p)
    assert s.tolist() == [1.0, 0.0, 1.0]  # H = [1.0, 0.5, 1.5]: equality fires
    assert state.h.tolist() == [1.0, 0.5, 1.5] and state.v.tolist() == [0.0, 0.5, 0.0]
    s, state = plif_step(torch.tensor([0.0, 2.0, 1.0]), state, p)
    assert state.h.tolist() == [0.0, 1.25, 0.5] and s.tolist() == [0.0, 1.0, 0.0]


def test_layout_is_validated():
    with pytest.raises(ValueError, match="layout"):
        PLIF(layout="nhwc")


@pytest.mark.parametrize("tau", [1.1, 2.0, 4.4])
def test_forward_and_backward_equal_spikingjelly(tau):
    ours, ref = PLIF(tau_init=tau), _sj_plif(tau)
    x1 = (torch.randn(16, 3, 50) * 1.5 + 0.5).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    s1, s2 = ours(x1), ref(x2)
    assert torch.equal(s1, s2)
    assert 0.02 < s1.mean() < 0.9
    g = torch.randn_like(s1)
    (s1 * g).sum().backward()
    (s2 * g).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-5, atol=1e-6)
    assert math.isclose(ours.w.grad.item(), ref.w.grad.item(), rel_tol=1e-4, abs_tol=1e-6)


def test_state_starts_at_zero_every_call():
    lif = PLIF()
    x = torch.full((4, 2), 0.9)
    assert torch.equal(lif(x), lif(x))  # no state leaks between clips (the reference needs reset_net)


def test_gradient_check_in_double():
    # the hand-written BPTT is the exact derivative of the surrogate model: compare with autograd of the
    # same surrogate written with plain ops (differentiable surrogate: S = heaviside + (g(x) - g(x).detach()))
    torch.manual_seed(3)
    x = (torch.randn(7, 11, dtype=torch.float64) + 0.6).requires_grad_()
    lif = PLIF(tau_init=2.5).double()
    s = lif(x)
    g = torch.randn_like(s)
    (s * g).sum().backward()

    w = lif.w.detach().clone().requires_grad_()
    xa = x.detach().clone().requires_grad_()
    k = torch.sigmoid(w)
    v = torch.zeros(11, dtype=torch.float64)
    outs = []
    for t in range(7):
        h = v + (xa[t] - v) * k
        prim = torch.atan(math.pi / 2 * 2.0 * (h - 1.0)) / math.pi + 0.5
        spike = (h >= 1.0).double() + prim - prim.detach()
        outs.append(spike)
        v = h * (1 - spike.detach())
    (torch.stack(outs) * g).sum().backward()
    assert torch.allclose(x.grad, xa.grad, rtol=1e-10, atol=1e-12)
    assert torch.allclose(lif.w.grad, w.grad, rtol=1e-10)
