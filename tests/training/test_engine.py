"""The training engine: schedule, parameter groups, exact resume, seeds, checkpoints, metrics, bad videos."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from svformer_deploy.errors import ConfigError, DataError, OutputExistsError
from svformer_deploy.models import create_model, load_checkpoint
from svformer_deploy.training import (
    TrainConfig, collate_skip_bad, param_groups, soft_cross_entropy, topk_correct, train, warmup_cosine,
)


def test_warmup_cosine_hand_computed():
    assert warmup_cosine(0, 4, 12, 0.1) == 0.25 and warmup_cosine(3, 4, 12, 0.1) == 1.0
    assert warmup_cosine(4, 4, 12, 0.1) == 1.0
    assert math.isclose(warmup_cosine(8, 4, 12, 0.1), 0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert math.isclose(warmup_cosine(12, 4, 12, 0.1), 0.1)


def test_no_weight_decay_on_one_dimensional_parameters():
    model = create_model("svformer_tiny", img_size=32)
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    plif_w = [p for n, p in model.named_parameters() if n.endswith("lif.w")]
    assert plif_w and all(any(p is q for q in no_decay["params"]) for p in plif_w)


def test_loss_and_topk():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.5, 3.0]])
    labels = torch.tensor([1, 2])
    s = 0.1
    target = torch.full((2, 3), s / 3).scatter_(1, labels[:, None], 1 - s + s / 3)
    assert torch.allclose(soft_cross_entropy(logits, target), F.cross_entropy(logits, labels, label_smoothing=s))
    assert topk_correct(logits, labels, 1) == 1 and topk_correct(logits, labels, 2) == 2
    assert topk_correct(logits, labels, 5) == 2  # k capped at 3 classes


def test_collate_drops_and_names_bad_videos():
    good = (torch.zeros(3, 2, 4, 4), 1)
    clips, labels, bad = collate_skip_bad([good, (None, 0, "A/v1.avi"), good])
    assert clips.shape == (2, 3, 2, 4, 4) and labels.tolist() == [1, 1] and bad == ["A/v1.avi"]
    assert collate_skip_bad([(None, 0, "x")]) == (None, None, ["x"])


def _cfg(out: Path, **kw) -> TrainConfig:
    base = dict(out_dir=str(out), epochs=2, batch_size=8, train_clips=24, val_videos=20, lr=3e-3, warmup_epochs=0.5,
                mixup=0.8, model_overrides={"img_size": 32, "num_frames": 4})
    base.update(kw)
    return TrainConfig(**base)


class _Crash(Exception):
    pass


def _crash_after_first_epoch(row):
    raise _Crash


def test_resume_continues_exactly_and_seed_repeats(tmp_path):
    torch.set_num_threads(1)
    straight = train(_cfg(tmp_path / "a"), progress=False)
    with pytest.raises(_Crash):  # the process "dies" after writing epoch 1
        train(_cfg(tmp_path / "b"), progress=False, on_epoch=_crash_after_first_epoch)
    resumed = train(_cfg(tmp_path / "b"), resume=tmp_path / "b" / "last.pt", progress=False)
    a, _ = load_checkpoint(straight.last)
    b, meta_b = load_checkpoint(resumed.last)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert [r["train_loss"] for r in straight.history] == [r["train_loss"] for r in resumed.history]
    # epoch 2 validated on the clips kept from epoch 1 (straight) or on freshly generated ones (resumed): the same
    assert [(r["val_loss"], r["val_top1"]) for r in straight.history] == [
        (r["val_loss"], r["val_top1"]) for r in resumed.history]
    assert meta_b["epoch"] == 2 and meta_b["extra"]["epoch"] == 1
    # another seed trains differently
    with pytest.raises(_Crash):
        train(_cfg(tmp_path / "c", seed=1), progress=False, on_epoch=_crash_after_first_epoch)
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())[0]["train_loss"] != straight.history[0]["train_loss"]


def test_run_folder_contents(tmp_path):
    torch.set_num_threads(1)
    result = train(_cfg(tmp_path, epochs=1, mixup=0.0), command="svformer-deploy train ...", progress=False)
    rows = json.loads((tmp_path / "metrics.json").read_text())
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 and len(csv_lines) == 2 and csv_lines[0].startswith("epoch,train_loss")
    assert rows[0]["train_clips"] == 24 and rows[0]["skipped_videos"] == 0 and 0 <= rows[0]["val_top1"] <= 1
    raw = torch.load(result.last, weights_only=True)  # resume state readable without unpickling code
    assert set(raw["extra"]) >= {"optimizer", "scheduler", "rng", "epoch", "scaler"}
    best, meta = load_checkpoint(result.best)
    assert meta["class_names"][0] == "move-right" and meta["seed"] == 0 and meta["extra"] == {}
    assert meta["command"] == "svformer-deploy train ..." and meta["metrics"]["val_top1"] == rows[0]["val_top1"]
    assert best.config.img_size == 32
    with pytest.raises(OutputExistsError, match="--resume"):
        train(_cfg(tmp_path, epochs=1), progress=False)
    with pytest.raises(ConfigError, match="no training state"):
        train(_cfg(tmp_path, epochs=2), resume=result.best, progress=False)


def _ucf_cfg(root: Path, out: Path, **kw) -> TrainConfig:
    return TrainConfig(model="svformer_tiny", data=str(root), out_dir=str(out), epochs=1, batch_size=2,
                       model_overrides={"img_size": 32, "num_frames": 4}, sampling_rate=2, **kw)


def test_bad_video_skipped_and_counted_and_its_batch_refilled(ucf_tiny, tmp_path):
    torch.set_num_threads(1)
    bad = ucf_tiny / "Noisy" / "v_Noisy_g03_c01.mp4"
    bad.write_bytes(bad.read_bytes()[:3000])  # truncated
    result = train(_ucf_cfg(ucf_tiny, tmp_path / "run"), progress=False)
    row = result.history[0]
    assert row["skipped_videos"] == 1 and row["skipped_ids"] == "Noisy/v_Noisy_g03_c01.mp4"
    # 4 training videos, batches of 2: the batch with the bad file keeps 1 clip, too few for BatchNorm; that clip
    # is carried into the next batch (trained on) unless it was the last batch (then counted as dropped)
    assert row["train_clips"] + row["dropped_clips"] == 3 and row["train_clips"] >= 2 and 0 <= row["val_top1"] <= 1


def test_unreadable_validation_videos_are_skipped_counted_and_named(ucf_tiny, tmp_path):
    """A zero-byte file in the test list no longer aborts `train` after a full epoch."""
    torch.set_num_threads(1)
    (ucf_tiny / "Calm" / "v_Calm_g09_c01.mp4").write_bytes(b"")
    with open(ucf_tiny / "testlist01.txt", "a") as f:
        f.write("Calm/v_Calm_g09_c01.mp4\n")
    result = train(_ucf_cfg(ucf_tiny, tmp_path / "run"), progress=False)
    row = result.history[0]
    assert row["val_skipped_videos"] == 1 and row["val_skipped_ids"] == "Calm/v_Calm_g09_c01.mp4"
    assert row["val_clips"] == 2 and result.best.exists()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())[0]["val_skipped_videos"] == 1


def test_last_checkpoint_is_written_before_validation(tmp_path, monkeypatch):
    from svformer_deploy.training import engine

    def broken_validation(*a, **k):
        raise _Crash

    torch.set_num_threads(1)
    monkeypatch.setattr(engine, "_validate", broken_validation)
    with pytest.raises(_Crash):
        train(_cfg(tmp_path / "run", epochs=1), progress=False)
    model, meta = load_checkpoint(tmp_path / "run" / "last.pt")
    assert meta["epoch"] == 1 and meta["extra"]["epoch"] == 0 and meta["metrics"]["train_clips"] == 24
    assert "val_top1" not in meta["metrics"]


def test_readable_clips_that_never_fill_a_batch_are_reported_as_such(ucf_tiny, tmp_path):
    """1 readable + 1 unreadable video, batches of 2: the message says a readable clip was dropped, not that no
    video could be read, and what to do."""
    torch.set_num_threads(1)
    (ucf_tiny / "trainlist01.txt").write_text("Calm/v_Calm_g02_c01.mp4 1\nNoisy/v_Noisy_g02_c01.mp4 2\n")
    (ucf_tiny / "Noisy" / "v_Noisy_g02_c01.mp4").write_bytes(b"")
    with pytest.raises(DataError) as err:
        train(_ucf_cfg(ucf_tiny, tmp_path / "run", precise_bn_batches=0), progress=False)
    msg = str(err.value)
    assert "1 readable clip(s) were never trained on" in msg and "Noisy/v_Noisy_g02_c01.mp4" in msg
    assert "--batch-size" in msg and "none of the training videos could be read" not in msg


def test_precise_bn_is_the_average_of_batch_statistics():
    from svformer_deploy.training import precise_bn

    torch.manual_seed(0)
    model = create_model("svformer_tiny", img_size=32, num_frames=4).eval()
    batches = [torch.randn(3, 3, 4, 32, 32), torch.randn(5, 3, 4, 32, 32) + 0.5]
    with torch.no_grad():  # the stem sees the frames directly: its BN input is the stem conv output
        stats = [model.patch_embed1.conv(b.permute(2, 0, 1, 3, 4)) for b in batches]
    want_mean = sum(s.mean(dim=(0, 1, 3, 4)) for s in stats) / 2
    want_var = sum(s.transpose(0, 2).flatten(1).var(dim=1, unbiased=True) for s in stats) / 2
    assert precise_bn(model, batches) == 2
    bn = model.patch_embed1.bn
    assert torch.allclose(bn.running_mean, want_mean, atol=1e-5)
    assert torch.allclose(bn.running_var, want_var, rtol=1e-4)
    assert bn.momentum == 0.1 and not model.training


@pytest.mark.parametrize("kw, words", [({"device": "tpu"}, "--device 'tpu'"), ({"train_clips": 0}, "--train-clips 0"),
                                       ({"batch_size": 0}, "--batch-size 0"), ({"val_videos": -1}, "--val-videos -1"),
                                       ({"workers": -2}, "--workers -2")])
def test_train_config_refuses_values_no_run_can_use(kw, words):
    from svformer_deploy.errors import ConfigError
    from svformer_deploy.training import TrainConfig

    with pytest.raises(ConfigError, match=words):
        TrainConfig(**kw)
    assert TrainConfig(device="cuda:1").device == "cuda:1"  # valid names are kept, CUDA checked when training starts


def test_validation_clips_are_read_once_when_they_fit_and_every_epoch_when_not():
    from svformer_deploy.training.engine import _ValBatches

    batches = [(torch.full((2, 3), float(i)), torch.tensor([i, i]), []) for i in range(3)]  # 24 bytes of clips each
    reads = []

    def make_loader():
        reads.append(1)
        return iter(batches)

    kept = _ValBatches(make_loader, budget=72)
    assert [list(kept), list(kept), list(kept)] == [batches] * 3 and len(reads) == 1  # replayed from memory
    reads.clear()
    too_big = _ValBatches(make_loader, budget=71)
    assert [list(too_big), list(too_big)] == [batches] * 2 and len(reads) == 2 and too_big.cache is None
    reads.clear()
    stopped = _ValBatches(make_loader, budget=72)
    next(iter(stopped))  # a pass that did not finish (an error in validation) keeps nothing
    assert list(stopped) == batches and len(reads) == 2
