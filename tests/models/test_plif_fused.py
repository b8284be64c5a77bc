"""The fused CPU PLIF kernels against the pure-torch reference (_PLIFMultiStep): identical spikes, gradients
within 1e-6, any layout and thread count; a clean fallback when the extension cannot be built."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import svformer_deploy
from svformer_deploy.models import PLIF, create_model, neurons
from svformer_deploy.models._plif_ext import SOURCE, fused_plif_available
from svformer_deploy.models.neurons import _fused_kernel, _PLIFFused, _PLIFMultiStep

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not fused_plif_available(), reason="no C++ compiler: the fused kernel is not built")


def _inputs(dtype: torch.dtype, shape=(8, 3, 333), seed: int = 0) -> torch.Tensor:
    """Currents around the threshold, plus exact ties: with k = 1/2 (w = 0), x = 2 gives H = 1.0 = V_th at t = 0,
    and x = 2 after a spike (V = 0) ties again."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 0.5
    x[:, 0, :7] = 2.0
    x[1:, 1, :5] = 1.0
    return x.to(dtype)


def _run(fn, x: torch.Tensor, w0: float, grad: torch.Tensor):
    x = x.clone().requires_grad_()
    w = torch.tensor(w0, requires_grad=True)
    s = fn.apply(x, w, 1.0, 2.0, *([_fused_kernel(x)] if fn is _PLIFFused else []))
    gx, gw = torch.autograd.grad(s, (x, w), grad)
    return s, gx, gw


# tolerance on gradients: 1e-6 where the dtype resolves it, else one unit in the last place of the dtype
TOL = {torch.float32: 1e-6, torch.float64: 1e-6, torch.bfloat16: 2 ** -7, torch.float16: 2 ** -10}


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("w0", [0.0, -1.2, 2.0])
def test_spikes_identical_and_gradients_within_tolerance(dtype, w0):
    x = _inputs(dtype)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    s_ref, gx_ref, gw_ref = _run(_PLIFMultiStep, x, w0, grad)
    s, gx, gw = _run(_PLIFFused, x, w0, grad)
    assert s.dtype == dtype and torch.equal(s, s_ref)
    if w0 == 0.0:
        assert s[0, 0, :7].eq(1).all()  # the ties fire, as in the reference
    assert 0.02 < float(s.detach().float().mean()) < 0.9
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=TOL[dtype])
    torch.testing.assert_close(gw, gw_ref, rtol=TOL[dtype], atol=TOL[dtype])


def test_non_contiguous_inputs_odd_sizes_and_one_step():
    for x in (_inputs(torch.float32, (4, 2, 3, 5, 7)).permute(0, 3, 1, 4, 2),  # like the attention's q/k/v
              _inputs(torch.float32, (1, 2, 300)),
              _inputs(torch.float32, (16, 2, 1)),
              torch.empty(3, 0)):
        grad = torch.ones_like(x)
        ref, fused = _run(_PLIFMultiStep, x, 0.4, grad), _run(_PLIFFused, x, 0.4, grad)
        assert torch.equal(fused[0], ref[0])
        torch.testing.assert_close(fused[1], ref[1], rtol=0, atol=1e-6)
        torch.testing.assert_close(fused[2], ref[2], rtol=1e-6, atol=1e-6)


def test_results_do_not_depend_on_the_thread_count():
    x = _inputs(torch.float32, (8, 64, 1000))
    grad = torch.randn_like(x)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _run(_PLIFFused, x, 0.3, grad)
        torch.set_num_threads(2)
        two = _run(_PLIFFused, x, 0.3, grad)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two):
        assert torch.equal(a, b)  # dL/dw too: summed per fixed block, then over blocks in order


def test_model_uses_the_fused_kernel_and_matches_the_reference(monkeypatch):
    model = create_model("svformer_tiny", img_size=32, num_frames=4).train()
    x = torch.randn(2, *model.config.input_shape)
    calls = []
    real = _PLIFFused.forward
    monkeypatch.setattr(_PLIFFused, "forward", staticmethod(lambda *a: calls.append(1) or real(*a)))
    out = model(x)
    out.sum().backward()
    fused_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    n_plif = sum(isinstance(m, PLIF) for m in model.modules())
    assert len(calls) == n_plif > 0
    model.zero_grad()
    monkeypatch.setattr(neurons, "_fused_kernel", lambda x: None)
    ref = model(x)
    ref.sum().backward()
    assert torch.equal(out, ref)
    for name, p in model.named_parameters():
        torch.testing.assert_close(fused_grads[name], p.grad, rtol=1e-5, atol=1e-6, msg=name)


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


CHECK = """
import warnings, torch
from svformer_deploy.models import PLIF
from svformer_deploy.models._plif_ext import fused_plif_available
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    lif = PLIF()
    x = torch.tensor([[1.5], [0.6], [2.0], [2.0], [0.0]], requires_grad=True)
    s = lif(x); lif(x)
    s.sum().backward()
print(fused_plif_available(), s.flatten().tolist(), x.grad is not None)
print(len([w for w in caught if "fused PLIF" in str(w.message)]), [str(w.message) for w in caught])
"""


def test_without_a_compiler_one_warning_and_the_torch_implementation(tmp_path):
    res = _python(CHECK, CXX=str(tmp_path / "no-such-compiler"), SVFORMER_EXT_DIR=str(tmp_path / "ext"))
    assert res.returncode == 0, res.stderr
    first, second = res.stdout.splitlines()[:2]
    assert first == "False [0.0, 0.0, 1.0, 1.0, 0.0] True"
    assert second.startswith("1 ") and "could not be built" in second and "pure-torch" in second


def test_opt_out_by_environment():
    res = _python(CHECK, SVFORMER_NO_EXT="1")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[:2][0] == "False [0.0, 0.0, 1.0, 1.0, 0.0] True"
    assert res.stdout.splitlines()[1].startswith("0 ")


NO_BUILD = "import torch.utils.cpp_extension as ce\nce.load = None  # any build attempt fails loudly\n"


@pytest.mark.slow
def test_one_build_then_every_process_and_checkout_loads_it_directly(tmp_path):
    """A fresh cache folder gets one build (the source copied inside, a ``built`` stamp); later processes load
    the library without starting a build, even beside torch's lock file (which outlives every build) and from a
    copy of the package at another path."""
    ext = tmp_path / "ext"
    res = _python(CHECK, SVFORMER_EXT_DIR=str(ext))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "True [0.0, 0.0, 1.0, 1.0, 0.0] True"
    (build,) = ext.iterdir()
    assert (build / "built").exists() and (build / "plif.cpp").read_bytes() == SOURCE.read_bytes()
    if not (build / "lock").exists():  # torch >= 2.5's FileLock leaves its file behind (2.4's baton does not)
        (build / "lock").write_text("")  # so later processes meet one either way: it must not look like a build
    res = _python(NO_BUILD + CHECK, SVFORMER_EXT_DIR=str(ext))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[:2] == ["True [0.0, 0.0, 1.0, 1.0, 0.0] True", "0 []"]
    other = tmp_path / "other checkout"
    shutil.copytree(Path(svformer_deploy.__file__).parent, other / "svformer_deploy")  # the checkout's or a wheel's
    res = subprocess.run([sys.executable, "-c", NO_BUILD + CHECK], check=False, capture_output=True, text=True, cwd=other,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(other), "SVFORMER_EXT_DIR": str(ext)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "True [0.0, 0.0, 1.0, 1.0, 0.0] True"
    assert list(ext.iterdir()) == [build]


TRITON = """
import torch
from svformer_deploy.models import _plif_triton as pt
from svformer_deploy.models.neurons import _PLIFMultiStep
for dtype in (torch.float32, torch.float64, torch.float16):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(5, 2, 700, generator=g, dtype=torch.float64) * 1.5 + 0.5).to(dtype)
    x[:, 0, :7] = 2.0
    w = torch.tensor(0.0, dtype=torch.float64 if dtype == torch.float64 else torch.float32, requires_grad=True)
    xr = x.clone().requires_grad_()
    s_ref = _PLIFMultiStep.apply(xr, w, 1.0, 2.0)
    grad = torch.randn(x.shape, generator=g).to(dtype)
    gx_ref, gw_ref = torch.autograd.grad(s_ref, (xr, w), grad)
    k = torch.sigmoid(w.detach()).to(dtype)
    s = pt.plif_forward(x, float(k), 1.0)
    gx, gk = pt.plif_backward(x, grad, float(k), 1.0, 2.0)
    gw = float(gk * (k * (1 - k)))
    tol = 1e-6 if dtype != torch.float16 else 2 ** -10
    # the operators the neurons call (k a tensor, as torch.compile traces it): the same results
    op_s = torch.ops.svformer_deploy.plif_forward_triton(x, k, 1.0)
    op_gx, op_gk = torch.ops.svformer_deploy.plif_backward_triton(x, grad, k, 1.0, 2.0)
    same = torch.equal(op_s, s) and torch.equal(op_gx, gx) and torch.equal(op_gk, gk)
    print(dtype, torch.equal(s, s_ref) and same, float((gx.double() - gx_ref.double()).abs().max()) <= tol,
          abs(gw - float(gw_ref)) <= tol * max(1.0, abs(gw)))
"""


def test_triton_kernels_match_the_reference_in_the_interpreter():
    """The CUDA kernels' arithmetic, run by Triton's CPU interpreter (the suite has no GPU)."""
    pytest.importorskip("triton")
    res = _python(TRITON, TRITON_INTERPRET="1")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == [w for d in ("float32", "float64", "float16") for w in (f"torch.{d}", "True", "True",
                                                                                       "True")]
