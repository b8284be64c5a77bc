"""Every CUDA path on a real GPU (benchmarks/gpu/check.sh runs ``-m cuda``; without a GPU these skip): the Triton
PLIF against the reference kernel, the whole model CUDA vs CPU, spike packing, AMP, counting, NIR / ONNX export of
a model that lives on CUDA, the train / evaluate commands and torchrun with NCCL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from svformer_deploy.models import create_model, plif_multistep, record_spikes
from svformer_deploy.models import spike_packing as sp
from svformer_deploy.models.neurons import _PLIFMultiStep

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]

CUDA = torch.device("cuda")
TOL = {torch.float32: 1e-6, torch.float16: 2 ** -10}  # 1e-6 where the dtype resolves it, else one unit in the last
# place (as tests/models/test_plif_fused.py)


@pytest.fixture(autouse=True)
def _exact_matmuls():
    """TF32 off: CUDA and CPU convolutions / matmuls then round alike (the comparisons are of devices, not TF32)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _currents(dtype, shape=(8, 3, 4133), seed=0):
    """Currents around the threshold plus exact ties (k = 1/2, x = 2 gives H = V_th at t = 0)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 0.5
    x[:, 0, :7] = 2.0
    return x.to(dtype).to(CUDA)


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("w0", [0.0, -1.2, 2.0])
def test_triton_plif_spikes_identical_and_gradients_within_tolerance(dtype, w0):
    from svformer_deploy.models import _plif_triton  # noqa: F401  (Triton is there: the fused path is the one tested)

    x = _currents(dtype)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(dtype).to(CUDA)
    out = {}
    for name, fn in (("triton", plif_multistep), ("reference", lambda xx, w: _PLIFMultiStep.apply(xx, w, 1.0, 2.0))):
        xx = x.clone().requires_grad_()
        w = torch.tensor(w0, device=CUDA, requires_grad=True)
        s = fn(xx, w)
        out[name] = (s, *torch.autograd.grad(s, (xx, w), grad))
    (s, gx, gw), (s_ref, gx_ref, gw_ref) = out["triton"], out["reference"]
    assert s.dtype == dtype and torch.equal(s, s_ref)
    assert 0.02 < float(s.float().mean()) < 0.9
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=TOL[dtype])
    torch.testing.assert_close(gw, gw_ref, rtol=TOL[dtype], atol=TOL[dtype])


def _firing_tiny(**overrides):
    torch.manual_seed(0)
    m = create_model("svformer_tiny", **overrides).eval()
    with torch.no_grad():
        for p in m.parameters():  # make the neurons fire
            if p.dim() > 1:
                p.mul_(4)
    return m, torch.randn(2, *m.config.input_shape)


def test_whole_model_logits_and_spikes_on_cuda_equal_cpu():
    """In float64 the two devices give the same spikes (no threshold tie falls differently) and logits within
    1e-9; in float32 the logits agree to 1e-3 and the predictions are the same."""
    m, x = _firing_tiny()
    m64 = m.double()
    with torch.no_grad(), record_spikes(m64) as cpu_rec:
        cpu = m64(x.double())
    with torch.no_grad(), record_spikes(m64.to(CUDA)) as gpu_rec:
        gpu = m64(x.double().to(CUDA)).cpu()
    for name, s in cpu_rec.spikes.items():
        assert torch.equal(s.cpu(), gpu_rec.spikes[name].cpu()), name
    torch.testing.assert_close(gpu, cpu, rtol=0, atol=1e-9)
    m32 = m64.float()
    with torch.no_grad():
        a, b = m32.cpu()(x), m32.to(CUDA)(x.to(CUDA)).cpu()
    torch.testing.assert_close(b, a, rtol=0, atol=1e-3)
    assert torch.equal(a.argmax(-1), b.argmax(-1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_spike_packing_on_cuda_round_trips_and_gradients_are_bit_identical(dtype):
    x = (torch.randn(4, 3, 6, 5, 7, device=CUDA, dtype=torch.float64) * 2 + 1).to(dtype).requires_grad_()
    s = plif_multistep(x, torch.tensor(0.0, device=CUDA, requires_grad=True))
    for view in (s, s.permute(1, 0, 2, 3, 4), s.transpose(2, 3), s.to(torch.float32)):
        packed = sp.pack(view)
        assert isinstance(packed, sp.PackedSpikes) and packed.bits.device.type == CUDA.type
        out = sp.unpack(packed)
        assert out.dtype == view.dtype and out.stride() == view.stride() and torch.equal(out, view.detach())
    model = create_model("svformer_tiny").train().to(CUDA)
    xb, y = torch.randn(2, *model.config.input_shape, device=CUDA), torch.tensor([1, 7], device=CUDA)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = []
    for off in (False, True):
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        ctx = torch.autograd.graph.disable_saved_tensors_hooks("off") if off else torch.enable_grad()
        with ctx:
            logits = model(xb)
        F.cross_entropy(logits, y).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        assert torch.equal(g, grads[1][name]), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_amp_training_step_is_finite(dtype):
    """One AMP step (autocast; GradScaler for float16, whose small gradients underflow without loss scaling):
    finite loss and gradients, every trained parameter moved."""
    torch.manual_seed(0)
    model = create_model("svformer_tiny").train().to(CUDA)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    x = torch.randn(4, *model.config.input_shape, device=CUDA)
    y = torch.randint(0, model.config.num_classes, (4,), device=CUDA)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(2):  # the first float16 step may be skipped while the scale settles
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype):
            loss = F.cross_entropy(model(x), y)
        assert torch.isfinite(loss)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        for n, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
        scaler.step(opt)
        scaler.update()
    moved = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(moved) == len(before)


def test_counting_on_cuda_equals_cpu():
    from svformer_deploy.energy import count_ops

    m, x = _firing_tiny()
    m = m.double()
    cpu = count_ops(m, x.double(), plan=False)
    gpu = count_ops(m.to(CUDA), x.double().to(CUDA), plan=False)
    assert cpu.df.equals(gpu.df) and dict(cpu.uncounted) == dict(gpu.uncounted)
    assert cpu.totals() == gpu.totals()


@pytest.mark.parametrize("target", ["nir", "onnx"])
def test_export_of_a_model_on_cuda_equals_the_cpu_export(target, tmp_path):
    from svformer_deploy.exporters.nir_export import export_nir
    from svformer_deploy.exporters.onnx_export import export_onnx

    m, _ = _firing_tiny()
    export = export_nir if target == "nir" else export_onnx
    export(m, tmp_path / "cpu", checkpoint_sha256="0" * 64)
    export(m.to(CUDA), tmp_path / "cuda", checkpoint_sha256="0" * 64)
    assert next(m.parameters()).device.type == CUDA.type  # the export left the model where it was
    files = sorted(p.relative_to(tmp_path / "cpu") for p in (tmp_path / "cpu").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "cuda") for p in (tmp_path / "cuda").rglob("*") if p.is_file())
    for rel in files:
        a, b = tmp_path / "cpu" / rel, tmp_path / "cuda" / rel
        if rel.suffix == ".onnx":
            import onnx
            from onnx import numpy_helper

            ia = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(a)).graph.initializer}
            ib = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(b)).graph.initializer}
            assert ia.keys() == ib.keys() and all(np.array_equal(ia[k], ib[k]) for k in ia), rel
        elif rel.suffix == ".npz":
            with np.load(a) as za, np.load(b) as zb:
                assert za.files == zb.files and all(np.array_equal(za[k], zb[k]) for k in za.files), rel
        elif rel.suffix == ".nir":
            import nir

            ga, gb = nir.read(str(a)), nir.read(str(b))
            assert ga.nodes.keys() == gb.nodes.keys() and ga.edges == gb.edges, rel
            for k, node in ga.nodes.items():
                for field, va in vars(node).items():
                    vb = getattr(gb.nodes[k], field)
                    assert np.array_equal(va, vb) if isinstance(va, np.ndarray) else True, (rel, k, field)
        elif rel.suffix == ".json" and rel.name != ".svformer-deploy.json":
            da, db = json.loads(a.read_text()), json.loads(b.read_text())
            for key in ("written", "created", "created_at"):
                da.pop(key, None), db.pop(key, None)
            assert da == db, rel


def _cli(*args: str, cwd: Path, launcher: list[str] | None = None, **env: str) -> subprocess.CompletedProcess:
    cmd = (launcher or [sys.executable, "-m"]) + ["svformer_deploy", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env={**os.environ, **env})


TRAIN = ["train", "--model", "svformer_tiny", "--data", "moving-digits", "--epochs", "1", "--train-clips", "512",
         "--batch-size", "32", "--val-videos", "64", "--set", "img_size=32", "--device", "cuda"]


def test_train_and_evaluate_on_cuda_one_epoch_of_moving_digits(tmp_path):
    res = _cli(*TRAIN, "--out", "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "metrics.csv").is_file()
    res = _cli("evaluate", "run/best.pt", "--data", "moving-digits", "--videos", "64", "--device", "cuda",
               "--out", "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert result, result


def test_torchrun_one_process_with_nccl(tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m"]
    res = _cli(*TRAIN, "--out", "ddp", cwd=tmp_path, launcher=launcher, NCCL_DEBUG="INFO")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "NCCL INFO" in res.stdout + res.stderr  # the process group really used NCCL
    assert (tmp_path / "ddp" / "last.pt").is_file()
