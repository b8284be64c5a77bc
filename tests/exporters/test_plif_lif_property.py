"""Property tests of the PLIF -> nir.LIF mapping: our PLIF vs snntorch's import of the exported node.

snntorch's Leaky integrates ``mem = beta mem + I`` with ``beta = 1 - dt/tau`` and fires on
``mem > v_th / (r dt / tau)``, i.e. on ``tau_plif * H > tau_plif * V_th`` -- the same decision as PLIF's
``H >= V_th`` except (a) at exact ties H == V_th, where PLIF fires and NIR (strict) does not, and (b) within
float32 rounding of the threshold, where the two arithmetics may round differently. Sequences are compared up
to the first step where some neuron is that close to threshold; exact ties are tested on their own.
"""

import contextlib
import io

import nir
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from svformer_deploy.exporters.nir.lowering import _lif_node
from svformer_deploy.models.neurons import PLIFParameters, plif_step

NEAR = 1e-5  # relative distance to threshold treated as "a rounding tie"


def _snntorch_lif(tau: float, v_th: float, n: int):
    from snntorch.import_nir import import_from_nir

    node = _lif_node(tau, v_th, (n,))
    g = nir.NIRGraph(nodes={"input": nir.Input({"input": np.array([n])}), "lif": node,
                            "output": nir.Output({"output": np.array([n])})},
                     edges=[("input", "lif"), ("lif", "output")])
    with contextlib.redirect_stdout(io.StringIO()):
        return import_from_nir(g)


def _run_both(w: float, v_th: float, x: torch.Tensor):
    """Step ours and snntorch's side by side. Returns (ours, theirs, H) as (T, n) tensors."""
    k = torch.sigmoid(torch.tensor(w, dtype=torch.float32))
    tau = float(1.0 / k.double())
    net = _snntorch_lif(tau, v_th, x.shape[1])
    state, p = None, PLIFParameters(k, v_th)
    ours, theirs, hs = [], [], []
    for t in range(x.shape[0]):
        s, state = plif_step(x[t], state, p)
        hs.append(state.h)
        ours.append(s)
        out, _ = net(x[t][None])
        theirs.append(out[0])
    return torch.stack(ours), torch.stack(theirs), torch.stack(hs)


@settings(max_examples=60, deadline=None)
@given(w=st.floats(-2.5, 3.0), v_th=st.floats(0.25, 4.0),
       x=st.lists(st.lists(st.floats(-3.0, 8.0, width=32), min_size=6, max_size=6), min_size=1, max_size=24))
def test_spikes_identical_away_from_threshold_ties(w, v_th, x):
    x = torch.tensor(x, dtype=torch.float32)
    ours, theirs, h = _run_both(w, v_th, x)
    near = ((h - v_th).abs() <= NEAR * max(1.0, v_th)).any(dim=1)
    stop = int(near.nonzero()[0]) if near.any() else x.shape[0]
    assert torch.equal(ours[:stop], theirs[:stop])


@settings(max_examples=40, deadline=None)
@given(w=st.sampled_from([0.0, float(np.log(3.0)), -float(np.log(3.0))]),  # tau = 2, 4/3, 4 (k exact-ish)
       grid=st.lists(st.lists(st.integers(-8, 24), min_size=8, max_size=8), min_size=1, max_size=16))
def test_dyadic_inputs_hit_exact_ties_deliberately(w, grid):
    """Inputs on a 1/8 grid make H == V_th exactly and often; there PLIF fires and NIR does not, and it is the
    only kind of difference: at every step, before any tie, spikes are identical; at the first tie step, the
    neurons that differ are exactly the tied neurons (which PLIF fires and snntorch does not)."""
    x = torch.tensor(grid, dtype=torch.float32) / 8
    ours, theirs, h = _run_both(w, 1.0, x)
    tie = h == 1.0
    first = int(tie.any(dim=1).nonzero()[0]) if tie.any() else x.shape[0]
    assert torch.equal(ours[:first], theirs[:first])
    if first < x.shape[0]:
        differ = ours[first] != theirs[first]
        assert torch.equal(differ, tie[first]) and (ours[first][tie[first]] == 1).all()


def test_exact_tie_example():
    """tau = 2, V = 0, X = 2: H = 1.0 = V_th exactly. PLIF fires (>=); snntorch (strict >) does not."""
    ours, theirs, h = _run_both(0.0, 1.0, torch.tensor([[2.0, 2.5, 1.5]]))
    assert h[0].tolist() == [1.0, 1.25, 0.75]
    assert ours[0].tolist() == [1.0, 1.0, 0.0] and theirs[0].tolist() == [0.0, 1.0, 0.0]
