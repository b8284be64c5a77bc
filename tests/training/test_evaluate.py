"""Evaluation: summed softmax over views, top-k, per-class accuracy, confusion matrix, artefacts, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from svformer_deploy.cli import main
from svformer_deploy.data import iter_eval_videos
from svformer_deploy.models import create_model, save_checkpoint
from svformer_deploy.training.evaluate import confusion_matrix, evaluate_checkpoint, evaluate_model


def test_confusion_matrix_hand_computed():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def _model(**kw):
    torch.manual_seed(0)
    return create_model("svformer_tiny", img_size=32, num_frames=4, **kw).eval()


def test_scores_are_softmax_summed_over_views():
    torch.set_num_threads(1)
    model = _model()
    with torch.no_grad():  # make the random model's predictions vary with the input
        model.head.fc.weight.mul_(200)
    res = evaluate_model(model, "moving-digits", num_videos=30, clips=2, crops=3, progress=False)
    preds, labels = [], []
    with torch.no_grad():
        for s in iter_eval_videos("moving-digits", model.config, num_videos=30, clips=2, crops=3):
            preds.append(int(model(s.views).softmax(-1).sum(0).argmax()))
            labels.append(s.label)
    assert res.predictions == preds and res.labels == labels and res.num_videos == 30
    assert res.top1 == pytest.approx(np.mean(np.array(preds) == np.array(labels)))
    cm = confusion_matrix(np.array(labels), np.array(preds), 10)
    assert (res.confusion == cm).all()
    assert res.per_class["move-right"] == pytest.approx(cm[0, 0] / 3)  # 3 videos per class among the first 30
    assert res.top1 <= res.top5 <= 1.0
    assert res.to_dict()["views_per_video"] == 6


def test_checkpoint_evaluation_on_real_videos_writes_artefacts(tmp_path, ucf_tiny):
    torch.set_num_threads(1)
    ckpt = save_checkpoint(tmp_path / "m.pt", _model(num_classes=2), class_names=["Calm", "Noisy"], data=str(ucf_tiny))
    report, paths = evaluate_checkpoint(ckpt, None, out_dir=tmp_path / "eval", clips=2, crops=3, progress=False)
    saved = json.loads(paths["json"].read_text())
    assert saved["views_per_video"] == 6 and saved["clips"] == 2 and saved["crops"] == 3
    assert saved["num_videos"] == 2 and saved["top5"] == 1.0 and saved["data"] == str(ucf_tiny)
    assert saved["score_fusion"].startswith("softmax probabilities summed")
    assert paths["confusion_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["predictions_csv"].read_text().splitlines()[0] == "video_id,label,true_class,predicted,predicted_class"
    assert sum(map(sum, saved["confusion_matrix"])) == 2


def test_cli_evaluate_and_errors(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "m.pt", _model(), class_names=["x"] * 10, data="moving-digits")
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(ckpt), "--num-videos", "10", "--out", str(tmp_path / "ev")])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "1 clip(s) x 1 crop(s) = 1 views" in out and (tmp_path / "ev" / "eval.json").exists()
    assert "evaluate ━" not in out and "━" not in out  # the progress bar goes to stderr, results to stdout
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(tmp_path / "missing.pt")])
    assert exc.value.code == 2 and "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(ckpt), "--data", str(tmp_path), "--out", str(tmp_path / "ev2")])
    assert exc.value.code == 2 and "no split files" in capsys.readouterr().err
    # earlier results are refused before any work, and replaced with --force
    before = (tmp_path / "ev" / "eval.json").read_bytes()
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(ckpt), "--num-videos", "2", "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "eval.json already exists" in err and "--force" in err
    assert (tmp_path / "ev" / "eval.json").read_bytes() == before
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(ckpt), "--num-videos", "2", "--out", str(tmp_path / "ev"), "--force"])
    assert exc.value.code == 0 and json.loads((tmp_path / "ev" / "eval.json").read_text())["num_videos"] == 2


AWKWARD_CLASSES = ['comma, class', 'say "hi"', "two\nlines", "naïve Ωmega", "plain"]


def test_eval_outputs_are_valid_for_awkward_names_and_empty_classes(tmp_path):
    """Class names with commas, quotes, newlines and non-ASCII letters; classes without test videos (null, not NaN)."""
    import pandas as pd

    torch.set_num_threads(1)
    names = AWKWARD_CLASSES + [f"digit {i}" for i in range(5)]
    ckpt = save_checkpoint(tmp_path / "m.pt", _model(), class_names=names, data="moving-digits")
    _, paths = evaluate_checkpoint(ckpt, None, out_dir=tmp_path / "ev", num_videos=3, progress=False)
    text = paths["json"].read_text(encoding="utf-8")
    assert "NaN" not in text
    saved = json.loads(text)
    assert saved["class_names"] == names
    assert sum(v is None for v in saved["per_class_accuracy"].values()) >= 7  # 3 videos leave >= 7 classes empty
    df = pd.read_csv(paths["predictions_csv"], keep_default_na=False)
    assert list(df.columns) == ["video_id", "label", "true_class", "predicted", "predicted_class"]
    assert len(df) == 3 and df["true_class"].tolist() == [names[y] for y in df["label"]]
    assert df["predicted_class"].tolist() == [names[p] for p in df["predicted"]]


def test_predictions_csv_with_awkward_video_names(tmp_path, ucf_tiny):
    """Video file names with commas, quotes and non-ASCII letters survive predictions.csv (read back by pandas)."""
    import pandas as pd

    torch.set_num_threads(1)
    weird = {"Calm": 'v_Calm,g01_"née".mp4', "Noisy": "v_Noisy_ü,ß.mp4"}  # split lists allow no spaces
    for cls, name in weird.items():
        (ucf_tiny / cls / f"v_{cls}_g01_c01.mp4").rename(ucf_tiny / cls / name)
    (ucf_tiny / "testlist01.txt").write_text("".join(f"{c}/{n}\n" for c, n in weird.items()), encoding="utf-8")
    ckpt = save_checkpoint(tmp_path / "m.pt", _model(num_classes=2), class_names=["Calm", "Noisy"],
                           data=str(ucf_tiny))
    _, paths = evaluate_checkpoint(ckpt, None, out_dir=tmp_path / "eval", progress=False)
    df = pd.read_csv(paths["predictions_csv"], keep_default_na=False)
    assert df["video_id"].tolist() == ['Calm/v_Calm,g01_"née".mp4', "Noisy/v_Noisy_ü,ß.mp4"]


def test_cli_evaluate_prints_its_result_line_whole(tmp_path, capsys):
    """Log lines with numbers are not hard-wrapped at the terminal width (80 columns when not a terminal)."""
    ckpt = save_checkpoint(tmp_path / "m.pt", _model(), class_names=["x"] * 10, data="moving-digits")
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(ckpt), "--num-videos", "2", "--out", str(tmp_path / "ev")])
    assert exc.value.code == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "softmax summed" in ln)
    assert len(line) > 80 and "top-1" in line and "top-5" in line, line
