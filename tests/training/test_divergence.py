"""Training that diverges (issue 26, item 2; pytorch #46849).

The case: ``svformer-deploy train --lr 1e30`` on moving digits. Before, every epoch ran with loss NaN, the command
exited 0, and best.pt / last.pt held 157 non-finite tensors that ``evaluate`` then refused. Now a step with a
non-finite loss or gradient is skipped and counted (with AMP: the GradScaler's rule), ``--max-bad-steps``
consecutive ones stop the run with one line and exit 2, an epoch that ends inside such a run writes no checkpoint,
and best.pt / last.pt are never non-finite. ``finetune`` likewise.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from svformer_deploy._threads import ThreadGovernor
from svformer_deploy.data import build_dataset
from svformer_deploy.errors import ConfigError, TrainingDivergedError
from svformer_deploy.models import create_model, load_checkpoint, save_checkpoint
from svformer_deploy.training import TrainConfig, engine, finetune, train
from svformer_deploy.training.engine import DivergenceGuard, LoopConfig, _Dist, _train_epoch, nonfinite_tensors
from svformer_deploy.training.finetune import FinetuneConfig
from tests.helpers import run_cli


class _NaNGradient(torch.autograd.Function):
    """0 in the forward, NaN as its gradient: a finite loss whose gradient is not."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.zeros_like(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return torch.full_like(grad, math.nan)


def _epoch(bad_steps: set[int], *, limit: int = 100, kind: str = "loss", scaler=None, guard=None):  # noqa: ANN001
    """One epoch of 6 steps (48 moving-digits clips, batches of 8) whose steps in ``bad_steps`` get a NaN loss
    (``kind="loss"``) or a finite loss with a NaN gradient (``kind="grad"``). Returns (row, model before, model
    after, guard, optimizer)."""
    torch.manual_seed(0)
    model = create_model("svformer_tiny", img_size=32, num_frames=4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = LoopConfig(batch_size=8, train_clips=48, max_bad_steps=limit)
    ds = build_dataset("moving-digits", model.config, split="train", num_clips=48)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = scaler or torch.amp.GradScaler("cuda", enabled=False)
    step = iter(range(100))

    def loss_fn(clips, labels):  # noqa: ANN001, ANN202
        logits = model(clips)
        loss = F.cross_entropy(logits, labels)
        if next(step) in bad_steps:
            loss = loss * math.nan if kind == "loss" else loss + _NaNGradient.apply(logits).sum()
        return loss, logits, {}

    guard = guard or DivergenceGuard(limit)
    row = _train_epoch(model, model, ds, cfg, _Dist(), torch.device("cpu"), 0, opt, sched, scaler, 6, False,
                       ThreadGovernor(), loss_fn, guard=guard)
    return row, before, model, guard, opt


def test_bad_steps_are_skipped_counted_and_leave_no_trace():
    row, before, model, guard, opt = _epoch({0, 1, 2, 3, 4, 5})
    assert row["nonfinite_steps"] == 6 and row["train_clips"] == 0 and math.isnan(row["train_loss"])
    after = model.state_dict()
    # no weight moved, and no BatchNorm statistic either (the NaN forwards' updates were put back)
    assert all(torch.equal(before[k], after[k]) for k in before), [k for k in before if not torch.equal(before[k],
                                                                                                     after[k])]
    assert opt.state_dict()["state"] == {}  # the optimizer never stepped
    assert guard.suspect() and guard.run == 6


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_isolated_bad_steps_are_skipped_and_training_goes_on(kind):
    row, before, model, guard, _ = _epoch({1, 3}, kind=kind)
    assert row["nonfinite_steps"] == 2 and row["train_clips"] == 32 and math.isfinite(row["train_loss"])
    assert not nonfinite_tensors(model) and not guard.suspect()
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # the good steps trained


def test_consecutive_bad_steps_stop_the_run_naming_the_epoch():
    words = r"^epoch 1: training diverged: 3 consecutive steps with a non-finite loss or gradient \(--max-bad-steps 3"
    with pytest.raises(TrainingDivergedError, match=words + r"; 3 in this epoch\)"):
        _epoch({1, 2, 3, 4, 5}, limit=3)
    # a bad run is consecutive steps: isolated ones never add up to a stop
    _epoch({0, 2, 4}, limit=2)


def test_the_count_of_consecutive_bad_steps_carries_across_epochs():
    guard = DivergenceGuard(4)
    _epoch({4, 5}, guard=guard)
    assert guard.run == 2
    with pytest.raises(TrainingDivergedError, match="4 consecutive"):
        _epoch({0, 1, 2}, guard=guard)


def test_with_amp_the_grad_scalers_rule_decides():
    """A step the GradScaler skips (Inf/NaN in its gradients; it halves the scale) is a bad step."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    row, _, model, guard, _ = _epoch({2, 3}, kind="grad", scaler=scaler)
    assert row["nonfinite_steps"] == 2 and row["train_clips"] == 32
    assert scaler.get_scale() == 2.0 ** 8 and not nonfinite_tensors(model)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_train_lr_1e30_stops_with_one_line_and_saves_nothing_non_finite(tmp_path, capsys):
    """The issue's case."""
    out = tmp_path / "run"
    code = run_cli(["train", "--lr", "1e30", "--out", str(out), "--epochs", "2", "--train-clips", "256",
                    "--val-videos", "32", "--set", "img_size=32", "--set", "num_frames=4", "--device", "cpu",
                    "--precise-bn-batches", "2", "--max-bad-steps", "4"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: epoch 1: training diverged: 4 consecutive steps with a non-finite loss or gradient")
    assert "lower --lr (now 1e+30)" in err and "nothing was saved" in err
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()


def test_cli_refuses_max_bad_steps_below_one(tmp_path, capsys):
    assert run_cli(["train", "--max-bad-steps", "0", "--out", str(tmp_path / "r")]) == 2
    with pytest.raises(ConfigError, match="--max-bad-steps 0"):
        TrainConfig(max_bad_steps=0)


def _small(out: Path, **kw) -> TrainConfig:
    return TrainConfig(out_dir=str(out), epochs=2, batch_size=8, train_clips=24, val_videos=16, precise_bn_batches=2,
                       model_overrides={"img_size": 32, "num_frames": 4}, **kw)


def test_a_late_divergence_never_overwrites_the_last_good_checkpoints(tmp_path, monkeypatch):
    """Epoch 1 trains well; from epoch 2 every loss is NaN (fewer steps than --max-bad-steps): epoch 2 ends inside a
    run of bad steps, so it writes no checkpoint; the run stops with the error; last.pt and best.pt are epoch 1's,
    byte for byte, and --resume continues from them."""
    torch.set_num_threads(1)
    out = tmp_path / "run"
    kept: dict[str, str] = {}
    real = engine.soft_cross_entropy

    def diverge_after_epoch_1(row):  # noqa: ANN001, ANN202
        kept.update(last=_sha(out / "last.pt"), best=_sha(out / "best.pt"))
        monkeypatch.setattr(engine, "soft_cross_entropy", lambda logits, target: real(logits, target) * math.nan)

    with pytest.raises(TrainingDivergedError, match=r"epoch 2: training diverged: the run ended inside 3 "
                                                     r"consecutive steps .*last.pt holds epoch 1, the last that ended "
                                                     r"well, and .*best.pt the best epoch up to it"):
        train(_small(out), progress=False, on_epoch=lambda r: r["epoch"] == 1 and diverge_after_epoch_1(r))
    assert _sha(out / "last.pt") == kept["last"] and _sha(out / "best.pt") == kept["best"]
    rows = json.loads((out / "metrics.json").read_text())
    assert [r["checkpoint_saved"] for r in rows] == [True, False] and rows[1]["nonfinite_steps"] == 3
    load_checkpoint(out / "best.pt")  # finite: evaluate accepts it
    monkeypatch.setattr(engine, "soft_cross_entropy", real)
    result = train(_small(out), resume=out / "last.pt", progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2] and result.history[1]["nonfinite_steps"] == 0
    assert not nonfinite_tensors(load_checkpoint(result.last)[0])


def test_non_finite_weights_are_never_saved(tmp_path, monkeypatch):
    """Weights that became NaN/Inf through a step whose gradients were finite (e.g. a weight-decay overflow) stop
    the run at the end of the epoch instead of being written."""
    out = tmp_path / "run"
    real_step = torch.optim.AdamW.step

    def poisoning_step(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        result = real_step(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(math.inf)
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoning_step)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1: training diverged: NaN or Inf in \d+ tensor\(s\) after "
                                                     r"the epoch \(patch_embed1"):
        train(_small(out, max_bad_steps=50), progress=False)
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("svformer_tiny", img_size=32, num_frames=4, bn="per_timestep").eval()
    return save_checkpoint(tmp_path_factory.mktemp("teacher") / "t.pt", model,
                           class_names=[f"c{i}" for i in range(10)], data="moving-digits")


def test_finetune_late_divergence_keeps_the_last_good_last_pt_and_writes_no_result(tmp_path, teacher, monkeypatch):
    out = tmp_path / "ft"
    cfg = FinetuneConfig(out_dir=str(out), epochs=2, batch_size=8, train_clips=24, val_videos=8, eval_videos=8,
                         device="cpu")
    kept: dict[str, str] = {}
    real = finetune.distillation_loss

    def diverge(row):  # noqa: ANN001, ANN202
        kept["last"] = _sha(out / "last.pt")
        monkeypatch.setattr(finetune, "distillation_loss", lambda *a: real(*a) * math.nan)

    with pytest.raises(TrainingDivergedError, match=r"epoch 2: .*finetuned\.pt was not written; lower --lr "
                                                     r"\(now 0\.001\) and start again with --force; .*last\.pt holds "
                                                     r"epoch 1"):
        finetune.finetune(teacher, cfg, progress=False, on_epoch=lambda r: r["epoch"] == 1 and diverge(r))
    assert _sha(out / "last.pt") == kept["last"] and not (out / "finetuned.pt").exists()


def test_cli_finetune_lr_1e30_stops_with_one_line(tmp_path, teacher, capsys):
    out = tmp_path / "ft"
    code = run_cli(["finetune", str(teacher), "--lr", "1e30", "--out", str(out), "--epochs", "2", "--train-clips",
                    "64", "--batch-size", "8", "--videos", "8", "--device", "cpu", "--max-bad-steps", "3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: epoch 1: training diverged: 3 consecutive")
    assert not (out / "last.pt").exists() and not (out / "finetuned.pt").exists()
