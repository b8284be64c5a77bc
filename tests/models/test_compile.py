"""``torch.compile`` of training steps (issue 26, item 4).

The case: ``torch.compile(model)`` (inductor, CPU), forward + backward in training mode. Before, dynamo broke its
graph inside every PLIF layer (``float(k)`` of a tensor, the kernel library's loader traced), recompiled
``PLIF.forward`` for every layer shape until its limit of 8 ("tensor 'x' rank mismatch"), then inductor failed
with a ``TypeError``. Now the fused kernels are operators with fake implementations, the kernel choice is a
constant to dynamo, and a whole model is one graph per input shape (``fullgraph=True`` holds).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from svformer_deploy.models import PLIF, create_model, neurons
from svformer_deploy.models.neurons import _fused_kernel

KERNEL = _fused_kernel(torch.zeros(1, 8))
needs_kernel = pytest.mark.skipif(KERNEL != "cpp", reason="no C++ compiler: the fused kernel is not built")


def _op_counts(gm: torch.fx.GraphModule) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and str(node.target).startswith("svformer_deploy."):
            name = str(node.target).split(".")[1]
            counts[name] = counts.get(name, 0) + 1
    return counts


class _Recorder:
    """An aot_eager-like backend that records every forward and backward graph it is given."""

    def __init__(self) -> None:
        from functorch.compile import make_boxed_func
        from torch._dynamo.backends.common import aot_autograd

        self.forward: list[dict[str, int]] = []
        self.backward: list[dict[str, int]] = []

        def fw(gm, _inputs):  # noqa: ANN001, ANN202
            self.forward.append(_op_counts(gm))
            return make_boxed_func(gm.forward)

        def bw(gm, _inputs):  # noqa: ANN001, ANN202
            self.backward.append(_op_counts(gm))
            return make_boxed_func(gm.forward)

        self.backend = aot_autograd(fw_compiler=fw, bw_compiler=bw)


def _step(model: nn.Module, clips: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """One forward + backward of ``model`` (compiled or not); the gradient of every parameter, by name."""
    module = getattr(model, "_orig_mod", model)
    module.zero_grad(set_to_none=True)
    F.cross_entropy(model(clips), labels).backward()
    return {n: p.grad.clone() for n, p in module.named_parameters()}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@needs_kernel
def test_whole_model_training_step_is_one_graph_with_the_fused_operators():
    torch.manual_seed(0)  # float64: no spike flips on the compiler's other rounding, so gradients compare tightly
    model = create_model("svformer_tiny", img_size=32, num_frames=2).double().train()
    eager = copy.deepcopy(model)
    n_plif = sum(isinstance(m, PLIF) for m in model.modules())
    rec = _Recorder()
    compiled = torch.compile(model, backend=rec.backend, fullgraph=True, dynamic=False)  # a graph break fails here
    labels = torch.tensor([1, 7, 3])
    for seed in range(3):  # the same shape again: no recompilation
        clips = torch.randn(3, *model.config.input_shape, generator=torch.Generator().manual_seed(seed),
                            dtype=torch.float64)
        got, want = _step(compiled, clips, labels), _step(eager, clips, labels)
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-11, msg=name)
    assert len(rec.forward) == len(rec.backward) == 1
    # every PLIF layer is one call of the fused forward and one of the fused backward, traced as operators
    assert rec.forward[0] == {"plif_forward": n_plif}
    assert rec.backward[0] == {"plif_backward": n_plif}
    clips = torch.randn(2, *model.config.input_shape, dtype=torch.float64)
    _step(compiled, clips, labels[:2])  # another batch size: one more graph, for that shape
    assert len(rec.forward) == 2


def test_reference_path_compiles_as_one_graph_too(monkeypatch):
    """Without the C++ kernels (no compiler, SVFORMER_NO_EXT=1) the pure-torch PLIF is traced as it is."""
    monkeypatch.setattr(neurons, "_fused_kernel", lambda x: None)
    torch.manual_seed(0)
    model = create_model("svformer_tiny", img_size=32, num_frames=2).double().train()
    eager = copy.deepcopy(model)
    rec = _Recorder()
    compiled = torch.compile(model, backend=rec.backend, fullgraph=True, dynamic=False)
    clips, labels = torch.randn(2, *model.config.input_shape, dtype=torch.float64), torch.tensor([0, 4])
    got, want = _step(compiled, clips, labels), _step(eager, clips, labels)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-11, msg=name)
    assert len(rec.forward) == 1 and rec.forward[0] == {}


@pytest.mark.slow
@needs_kernel
def test_compiled_training_step_with_inductor_gives_the_eager_gradients_and_update():
    """The issue's case: ``torch.compile(model)`` with inductor (the default backend), training mode, forward +
    backward + an optimizer step, as one graph. float64, so that no spike flips on the compiler's other rounding:
    gradients, the updated weights and BatchNorm's running statistics equal the eager ones. (SGD: AdamW would
    blow the ~1e-13 rounding noise on the gradients of biases that BatchNorm cancels, exactly 0 in theory, up to
    ~1e-8 weight differences, since it divides every gradient by its own running magnitude.)"""
    from torch._dynamo.utils import counters

    counters.clear()
    torch.manual_seed(0)
    model = create_model("svformer_tiny", img_size=32, num_frames=2).double().train()
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    opt_c = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    opt_e = torch.optim.SGD(eager.parameters(), lr=0.05, momentum=0.9)
    labels = torch.tensor([0, 3, 9])
    for seed in range(2):
        clips = torch.randn(3, *model.config.input_shape, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(seed))
        got, want = _step(compiled, clips, labels), _step(eager, clips, labels)
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-8, atol=1e-10, msg=name)
        assert sum(float(g.abs().sum()) > 0 for n, g in got.items() if n.endswith(".w")) > 10  # the taus learn
        opt_c.step()
        opt_e.step()
    assert counters["stats"]["unique_graphs"] == 1  # the second step reused the first step's graph
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-8, atol=1e-10, msg=name)
    for (name, b), c in zip(model.named_buffers(), eager.buffers()):
        torch.testing.assert_close(b, c, rtol=1e-8, atol=1e-10, msg=name)


@needs_kernel
def test_the_fused_operators_pass_torch_library_opcheck():
    """Schema, fake (meta) implementation and dispatch of each operator are consistent (torch.library.opcheck)."""
    ops = torch.ops.svformer_deploy
    x = torch.randn(5, 3, 16, dtype=torch.float64) + 0.5
    k = torch.tensor(0.4, dtype=torch.float64)
    torch.library.opcheck(ops.plif_forward, (x, k, 1.0))
    torch.library.opcheck(ops.plif_forward_bits, (x.float(), k.float(), 1.0))
    torch.library.opcheck(ops.plif_backward, (x, torch.randn_like(x), k, 1.0, 2.0))
    torch.library.opcheck(ops.plif_forward, (x.transpose(1, 2), k, 1.0))  # any strides in
