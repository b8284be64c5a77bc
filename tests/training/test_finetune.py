"""Fine-tuning: time-averaged BN conversion, distillation and budget losses, resume, report, budget curve, export."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from svformer_deploy.data import build_dataset
from svformer_deploy.errors import ConfigError, OutputExistsError
from svformer_deploy.models import load_checkpoint, record_spikes, save_checkpoint
from svformer_deploy.models.norm import TemporalBatchNorm
from svformer_deploy.training.finetune import (
    CURVE_PNG, ENERGY_BN, REPORT_NAME, FinetuneConfig, budget_penalty, distillation_loss, energy_per_video, finetune,
    finetune_budgets, format_report, rate_matching_loss, spike_rates, time_averaged_bn,
)
from tests.exporters.conftest import active_model

SMALL = dict(img_size=32, num_frames=4)


def _per_timestep_model(seed: int = 0):
    """A per-timestep-BN model whose T x C statistics really differ between timesteps."""
    return active_model(seed, bn="per_timestep", **SMALL)


@pytest.fixture(scope="module")
def pt_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ft") / "pt.pt"
    save_checkpoint(path, _per_timestep_model(), class_names=[f"c{i}" for i in range(10)], data="moving-digits")
    return path


def _cfg(out, **kw) -> FinetuneConfig:
    base = dict(out_dir=str(out), epochs=1, batch_size=8, train_clips=16, val_videos=8, eval_videos=12, device="cpu")
    base.update(kw)
    return FinetuneConfig(**base)


def test_time_averaged_bn_is_the_per_timestep_mean_and_keeps_every_other_weight():
    teacher = _per_timestep_model()
    student = time_averaged_bn(teacher)
    assert student.config.bn == "shared" and teacher.config.bn == "per_timestep"
    t_mods = dict(teacher.named_modules())
    n_bn = 0
    for name, bn in student.named_modules():
        if isinstance(bn, TemporalBatchNorm):
            n_bn += 1
            s_t, h_t = t_mods[name].affine()  # (T, C)
            s, h = bn.affine()                # (C,)
            assert s.shape == (bn.num_features,)
            torch.testing.assert_close(s, s_t.mean(0), rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(h, h_t.mean(0), rtol=1e-6, atol=1e-6)
    assert n_bn > 5
    t_state = teacher.state_dict()
    for k, v in student.state_dict().items():
        if t_state[k].shape == v.shape and not any(k.startswith(n + ".") for n, m in student.named_modules()
                                                   if isinstance(m, TemporalBatchNorm)):
            assert torch.equal(v, t_state[k]), k


def test_time_averaged_bn_equals_what_approximate_bn_folds():
    """The student's exact (shared-BN) lowering has the weights of the teacher's --approximate-bn lowering."""
    from svformer_deploy.exporters.nir.lowering import lower_svformer

    teacher = _per_timestep_model(3)
    naive = lower_svformer(teacher, approximate_bn=True)
    exact = lower_svformer(time_averaged_bn(teacher))
    assert naive.approximations and not exact.approximations
    compared = 0
    for pa, pb in zip(naive.partitions, exact.partitions):
        assert list(pa.nodes) == list(pb.nodes)
        for name, node in pa.nodes.items():
            for attr in ("weight", "bias"):
                if hasattr(node, attr) and isinstance(getattr(node, attr), np.ndarray):
                    np.testing.assert_allclose(getattr(pb.nodes[name], attr), getattr(node, attr), rtol=1e-5,
                                               atol=1e-6, err_msg=f"{pa.name}/{name}.{attr}")
                    compared += 1
    assert compared > 10
    for k, v in naive.host_params.items():
        np.testing.assert_allclose(exact.host_params[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_shared_model_is_copied_unchanged():
    m = active_model(1, **SMALL)
    c = time_averaged_bn(m)
    assert c is not m and all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), c.state_dict().values()))


def test_distillation_loss_hand_computed():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    t = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    y = torch.tensor([0, 2])
    tau, alpha = 2.0, 0.7
    p = (t / tau).softmax(-1)
    kl = (p * (p.log() - (s / tau).log_softmax(-1))).sum(-1).mean()
    want = alpha * tau * tau * kl + (1 - alpha) * F.cross_entropy(s, y)
    torch.testing.assert_close(distillation_loss(s, t, y, tau, alpha), want)
    assert float(distillation_loss(t, t, y, tau, 1.0)) == pytest.approx(0.0, abs=1e-7)


def test_rate_and_budget_terms_hand_computed():
    a = {"x": torch.tensor([0.1, 0.3]), "y": torch.tensor([0.5, 0.5])}
    b = {"x": torch.tensor([0.2, 0.3]), "y": torch.tensor([0.5, 0.1]), "z": torch.tensor([1.0])}
    want = ((0.01 + 0.0) / 2 + (0.0 + 0.16) / 2) / 2
    assert float(rate_matching_loss(a, b)) == pytest.approx(want)
    with pytest.raises(ConfigError):
        rate_matching_loss({"q": torch.zeros(2)}, b)
    assert float(budget_penalty(torch.tensor(0.04), 0.05)) == 0.0
    assert float(budget_penalty(torch.tensor(0.1), 0.05)) == pytest.approx(1.0)


def test_spike_rates_match_the_recorded_spikes_and_carry_gradients():
    torch.manual_seed(0)
    model = active_model(2, **SMALL).train()
    clips = torch.randn(2, 3, 4, 32, 32)
    with spike_rates(model) as r, record_spikes(model) as rec:
        model(clips)
    ref = rec.firing_rates()
    assert list(r.per_layer) == list(ref)
    for k, v in ref.items():
        torch.testing.assert_close(r.per_layer[k].detach(), v)
    total = sum(float(s.sum()) for s in rec.spikes.values())
    steps = sum(s.numel() for s in rec.spikes.values())
    assert float(r.overall.detach()) == pytest.approx(total / steps, rel=1e-6) and 0 < total < steps
    r.overall.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_config_rejects_bad_options(pt_ckpt, tmp_path):
    with pytest.raises(ConfigError, match="spike-budget"):
        FinetuneConfig(spike_budget=1.5)
    with pytest.raises(ConfigError, match="--bn"):
        FinetuneConfig(bn="per_timestep")
    with pytest.raises(ConfigError, match="itself"):
        finetune(pt_ckpt, _cfg(tmp_path / "x", bn="keep"), progress=False)


@pytest.mark.slow
def test_conversion_run_reports_three_models_and_exports_exactly(pt_ckpt, tmp_path):
    from svformer_deploy.exporters import export_checkpoint, get_exporter

    cfg = _cfg(tmp_path / "run", epochs=2, train_clips=32, lr=2e-3, kd_alpha=1.0, rate_weight=1.0)
    res = finetune(pt_ckpt, cfg, progress=False)
    rep = res.report
    assert (res.out_dir / REPORT_NAME).exists() and (res.out_dir / "metrics.csv").exists()
    assert list(rep["models"]) == ["original", "naive_fold", "finetuned"]
    assert all(m["num_videos"] == 12 for m in rep["models"].values()) and rep["protocol"]["num_videos"] == 12
    assert rep["top1_change_vs_original"]["original"] == 0.0
    assert len(res.history) == 2 and res.history[-1]["train_rate_match"] >= 0
    model, meta = load_checkpoint(res.checkpoint)
    assert model.config.bn == "shared" and meta["teacher"]["bn"] == "per_timestep"
    assert meta["finetune_config"]["epochs"] == 2 and meta["class_names"][0] == "c0"

    # distillation moved the student towards the teacher: lower KL than the naive fold on held-out clips
    teacher, _ = load_checkpoint(pt_ckpt)
    clips = torch.stack([c for c, _ in build_dataset("moving-digits", model.config, split="val", num_clips=16)])
    with torch.no_grad():
        t = teacher(clips)
        y = torch.zeros(16, dtype=torch.long)
        kl_naive = float(distillation_loss(time_averaged_bn(teacher)(clips), t, y, 2.0, 1.0))
        kl_ft = float(distillation_loss(model(clips), t, y, 2.0, 1.0))
    assert kl_ft < kl_naive

    # the converted checkpoint exports to NIR exactly (no approximation) and verifies on real clips
    path, m2, _ = export_checkpoint(res.checkpoint, "nir", tmp_path / "bundle")
    clips_b = clips[:2]
    report = get_exporter("nir").verify(path, m2, [(clips_b, None)], data_desc="test")
    assert report["verdict"] == "exact" and report["approximations"] == []


def test_finetune_carries_readable_clips_of_a_short_batch_over_like_train(ucf_tiny, tmp_path):
    """The engine's one epoch loop: a batch left with 1 readable clip (a truncated video) does not step, and that
    clip is carried into the next batch instead of being lost; the unreadable video is counted and named."""
    torch.set_num_threads(1)
    teacher = tmp_path / "teacher.pt"
    save_checkpoint(teacher, active_model(0, bn="per_timestep", num_classes=2, **SMALL), class_names=["Calm", "Noisy"])
    bad = ucf_tiny / "Noisy" / "v_Noisy_g03_c01.mp4"
    bad.write_bytes(bad.read_bytes()[:3000])  # truncated
    res = finetune(teacher, _cfg(tmp_path / "run", data=str(ucf_tiny), batch_size=2, train_clips=None,
                                 val_videos=None, eval_videos=2), progress=False)
    row = res.history[0]
    assert row["skipped_videos"] == 1 and row["skipped_ids"] == "Noisy/v_Noisy_g03_c01.mp4"
    # 4 training videos, batches of 2: the carried clip is trained on unless its batch was the last one
    assert row["train_clips"] + row["dropped_clips"] == 3 and row["train_clips"] >= 2
    assert row["train_firing_rate"] > 0 and row["train_kd"] >= 0 and 0 <= row["val_top1"] <= 1


@pytest.mark.slow
def test_resume_continues_exactly_and_refuses_other_options(pt_ckpt, tmp_path):
    full = finetune(pt_ckpt, _cfg(tmp_path / "full", epochs=2, eval_videos=4), progress=False)
    part = _cfg(tmp_path / "part", epochs=2, eval_videos=4)
    with pytest.raises(KeyboardInterrupt):
        def stop(row):
            raise KeyboardInterrupt

        finetune(pt_ckpt, part, progress=False, on_epoch=stop)
    with pytest.raises(OutputExistsError):
        finetune(pt_ckpt, part, progress=False)
    with pytest.raises(ConfigError, match="another fine-tuning run"):
        finetune(pt_ckpt, _cfg(tmp_path / "part", epochs=2, eval_videos=4, lr=3e-3), resume=True, progress=False)
    resumed = finetune(pt_ckpt, part, resume=True, progress=False)
    a, _ = load_checkpoint(full.checkpoint)
    b, _ = load_checkpoint(resumed.checkpoint)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]


def test_energy_per_video_is_the_counter_total_per_video():
    from svformer_deploy.energy import count_ops, energy_of

    model = active_model(4, **SMALL)
    views = [torch.randn(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    got = energy_per_video(model, views, "45nm-fp32", batch_views=2)
    counts = count_ops(model, torch.cat(views), fold_bn=True)
    tot = counts.totals()
    assert got["synaptic_ops_per_video"] == pytest.approx((tot["mac"] + tot["ac"] + tot["spike_product"]) / 3)
    assert got["energy_uj_per_video"] == pytest.approx(energy_of(counts, "45nm-fp32").compute_pj / 3 * 1e-6, rel=1e-9)


@pytest.mark.slow
def test_spike_budget_curve_lowers_the_firing_rate(tmp_path):
    src = tmp_path / "shared.pt"
    save_checkpoint(src, active_model(5, **SMALL), class_names=[f"c{i}" for i in range(10)], data="moving-digits")
    cfg = _cfg(tmp_path / "curve", bn="keep", epochs=1, train_clips=32, lr=3e-3, budget_weight=5.0, eval_videos=6)
    results, curve = finetune_budgets(src, cfg, [0.02, 0.08, 0.04])
    rows = list(csv.DictReader(curve.open()))
    assert [r["model"] for r in rows] == ["original", "budget 0.08", "budget 0.04", "budget 0.02"]
    assert (tmp_path / "curve" / CURVE_PNG).stat().st_size > 5000
    orig = float(rows[0]["firing_rate"])
    for r in rows[1:]:
        assert float(r["firing_rate"]) < orig and float(r["energy_uj_per_video"]) > 0
        assert math.isfinite(float(r["top1"]))
    # a tighter budget does not spike more than a looser one; energy follows the spikes
    assert float(rows[3]["firing_rate"]) <= float(rows[1]["firing_rate"])
    assert float(rows[3]["energy_uj_per_video"]) < float(rows[0]["energy_uj_per_video"])
    # the energy's BatchNorm convention is stated where the figure is (a new user found it only in the docs)
    assert results[0].report["protocol"]["energy_bn"] == ENERGY_BN and ENERGY_BN in format_report(results[0].report)
    # finished budgets are reused on --resume
    again, _ = finetune_budgets(src, cfg, [0.02, 0.08, 0.04], resume=True)
    assert [r.report for r in again] == [r.report for r in results]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(pt_ckpt, tmp_path):
    """DDP like `train`: 2 CPU processes share the epoch; rank 0 writes one checkpoint and the report."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "svformer_deploy", "finetune", str(pt_ckpt), "--device", "cpu", "--epochs", "1", "--batch-size", "4",
           "--train-clips", "16", "--eval-videos", "4", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "metrics.json").read_text())
    assert len(rows) == 1 and rows[0]["train_clips"] == 16  # 2 steps x 4 clips x 2 processes
    model, meta = load_checkpoint(out / "finetuned.pt")
    assert meta["world_size"] == 2 and model.config.bn == "shared"
    assert not any(k.startswith("module.") for k in model.state_dict())
    assert json.loads((out / REPORT_NAME).read_text())["protocol"]["num_videos"] == 4
