"""The bundle executor's own NIR interpreter: NIR's strict threshold, and the non-strict diagnostic runtime."""

import torch

from svformer_deploy.exporters.nir.lowering import DT, _lif_node
from svformer_deploy.exporters.nir.runtime import NODE_RUNTIMES
from svformer_deploy.models.neurons import PLIFParameters, plif_step


def _run(runtime: str, tau: float, x: torch.Tensor) -> torch.Tensor:
    node = NODE_RUNTIMES[runtime].build("lif", _lif_node(tau, 1.0, (x.shape[-1],)), DT)
    return torch.stack([node(x[t]) for t in range(x.shape[0])])


def test_nonstrict_reference_fires_at_exact_ties_where_nir_does_not():
    """tau = 2: H = X / 2 at t = 0 lands exactly on V_th = 1 for X = 2 (the attention-count tie of the paper-size
    model). plif_step fires there, the reference interpreter (NIR: v > v_th) does not, the non-strict diagnostic
    does; one float32 ulp below threshold nobody fires. Later steps carry the state the same way."""
    x = torch.tensor([[[2.0, 1.0, 4.0, float(torch.nextafter(torch.tensor(2.0), torch.tensor(0.0)))]],
                      [[1.5, 2.0, 1.0, 0.5]]])  # (T=2, B=1, 4)
    p = PLIFParameters(torch.tensor(0.5), 1.0)
    s0, st = plif_step(x[0], None, p)
    s1, _ = plif_step(x[1], st, p)
    assert torch.cat([s0, s1]).tolist() == [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]]
    assert torch.equal(_run("reference-nonstrict", 2.0, x), torch.stack([s0, s1]))
    strict = _run("reference", 2.0, x)
    assert strict[0, 0].tolist() == [0.0, 0.0, 1.0, 0.0]      # the tie is lost ...
    assert strict[1, 0].tolist() == [1.0, 1.0, 0.0, 0.0]      # ... and its unreset state fires one step later


def test_nonstrict_reference_is_plif_step_on_random_currents():
    """Away from ties both interpreters are plif_step bit for bit (same rounded multiply and add); the
    non-strict one also at ties, so it equals plif_step everywhere."""
    g = torch.Generator().manual_seed(0)
    w = torch.tensor(0.3)
    k = torch.sigmoid(w)
    tau = float(1.0 / k.double())
    x = torch.rand(16, 2, 256, generator=g) * 3
    p = PLIFParameters(k, 1.0)
    state, ref = None, []
    for t in range(x.shape[0]):
        s, state = plif_step(x[t], state, p)
        ref.append(s)
    ref = torch.stack(ref)
    assert 0.1 < float(ref.mean()) < 0.9
    assert torch.equal(_run("reference-nonstrict", tau, x), ref)
