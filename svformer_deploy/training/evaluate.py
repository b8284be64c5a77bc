"""Evaluation as the reference does it: each video's softmax scores summed over its clips x crops views.

top-1 / top-5 over videos, per-class accuracy (correct / videos of the class), a confusion matrix
(rows = true class, columns = predicted class) as PNG, and a JSON result that states the views used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from svformer_deploy._atomic import atomic_write, atomic_write_csv, atomic_write_json
from svformer_deploy._outputs import mark_output, refuse_existing, refuse_file_in_the_way, refuse_whole_output
from svformer_deploy._threads import ThreadGovernor
from svformer_deploy.errors import DataError
from svformer_deploy.training.outputs import CONFUSION_PNG, EVAL_JSON, EVALUATION, PREDICTIONS_CSV

__all__ = ["EvalResult", "evaluate_model", "evaluate_checkpoint", "confusion_matrix", "plot_confusion"]


@dataclass
class EvalResult:
    top1: float
    top5: float
    per_class: dict[str, float]
    confusion: np.ndarray
    num_videos: int
    clips: int
    crops: int
    class_names: list[str]
    video_ids: list[str]
    predictions: list[int]
    labels: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"top1": self.top1, "top5": self.top5, "num_videos": self.num_videos, "clips": self.clips,
                "crops": self.crops, "views_per_video": self.clips * self.crops,
                "score_fusion": "softmax probabilities summed over the views of each video",
                "per_class_accuracy": self.per_class, "class_names": self.class_names,
                "confusion_matrix": self.confusion.tolist()}


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts C[i, j] = number of videos of true class i predicted as j."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


@torch.no_grad()
def evaluate_model(model: nn.Module, spec: str | os.PathLike, *, split: str = "val", clips: int = 1, crops: int = 1,
                   num_videos: int | None = None, seed: int = 0, class_names: list[str] | None = None,
                   batch_views: int = 64, progress: bool = True) -> EvalResult:
    """Score every video of ``spec``/``split``: sum over views of softmax(model(view)); predicted class = argmax."""
    from svformer_deploy.data import class_names as data_class_names
    from svformer_deploy.data import eval_video_count, iter_eval_videos

    data_names = data_class_names(spec)  # reads the data's layout: a wrong --data fails before the progress bar
    names = class_names or data_names
    k = model.config.num_classes
    if len(names) != k:
        raise DataError(f"{spec} has {len(names)} classes but the model predicts {k}; evaluate on the data the model "
                        "was trained on")
    device = next(model.parameters()).device
    model.eval()
    total = eval_video_count(spec, model.config, split=split, num_videos=num_videos)  # the videos really used
    ids: list[str] = []
    labels: list[int] = []
    scores: list[Tensor] = []
    pending: list[tuple[str, int, Tensor]] = []

    governor = ThreadGovernor()  # fewer threads while other processes keep our CPUs busy

    def flush() -> None:
        governor.tick()
        views = torch.cat([p[2] for p in pending]).to(device)
        probs = torch.cat([model(views[i:i + batch_views]).float().softmax(-1)
                           for i in range(0, len(views), batch_views)])
        for j, (vid, label, v) in enumerate(pending):
            n = len(v)
            scores.append(probs[j * n:(j + 1) * n].sum(0).cpu())
            ids.append(vid)
            labels.append(label)
        pending.clear()

    from svformer_deploy.training.engine import _progress

    with _progress(progress, "evaluate", total or 0) as bar:
        task = bar.add_task("videos", total=total)
        for sample in iter_eval_videos(spec, model.config, split=split, num_videos=num_videos, clips=clips,
                                       crops=crops, seed=seed):
            pending.append(sample)
            if sum(len(p[2]) for p in pending) >= batch_views:
                flush()
            bar.advance(task)
        if pending:
            flush()
    governor.restore()
    if not scores:
        raise DataError(f"{spec}: the {split} split has no videos")
    s = torch.stack(scores)
    y = torch.tensor(labels)
    top = s.topk(min(5, k), dim=-1).indices
    preds = top[:, 0].numpy()
    cm = confusion_matrix(y.numpy(), preds, k)
    per_class = {names[i]: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else float("nan") for i in range(k)}
    return EvalResult(top1=float((top[:, 0] == y).float().mean()),
                      top5=float((top == y[:, None]).any(-1).float().mean()),
                      per_class=per_class, confusion=cm, num_videos=len(y), clips=clips, crops=crops,
                      class_names=list(names), video_ids=ids, predictions=preds.tolist(), labels=labels)


def plot_confusion(cm: np.ndarray, names: list[str], path: str | os.PathLike, title: str) -> Path:
    """Row-normalised confusion matrix as a PNG (counts written in the cells when there are <= 20 classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(names)
    rate = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(4.0, min(0.45 * k + 2, 30))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rate[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out


def evaluate_checkpoint(checkpoint: str | os.PathLike, spec: str | os.PathLike | None = None, *,
                        out_dir: str | os.PathLike,
                        split: str = "val", clips: int = 1, crops: int = 1, num_videos: int | None = None,
                        device: str = "cpu", progress: bool = True, force: bool = False,
                        ) -> tuple[dict[str, Any], dict[str, Path]]:
    """Evaluate a checkpoint and write ``eval.json``, ``confusion.png`` and ``predictions.csv`` to ``out_dir``.

    ``spec`` defaults to the data the checkpoint was trained on. Earlier results in ``out_dir`` are refused
    (before any work) unless ``force``. Returns (the JSON dict, artefact paths).
    """
    from svformer_deploy.models import load_checkpoint

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    paths = {"json": out_dir / EVAL_JSON, "confusion_png": out_dir / CONFUSION_PNG,
             "predictions_csv": out_dir / PREDICTIONS_CSV}
    refuse_file_in_the_way(out_dir)
    refuse_whole_output(out_dir, EVALUATION)
    for path in paths.values():  # refuse_whole_output: they are an earlier evaluation's; --force replaces them
        refuse_existing(path, force)
    model, meta = load_checkpoint(checkpoint, map_location=device)
    spec = str(spec if spec is not None else meta.get("data", "moving-digits"))  # train recorded it resolved
    names = meta.get("class_names")
    result = evaluate_model(model, spec, split=split, clips=clips, crops=crops, num_videos=num_videos,
                            class_names=names, progress=progress)
    mark_output(out_dir, EVALUATION)
    report = {"checkpoint": str(checkpoint), "checkpoint_sha256": meta["sha256"], "model_name": meta["model_name"],
              "data": str(spec), "split": split, **result.to_dict()}
    atomic_write_csv(paths["predictions_csv"], [
        {"video_id": v, "label": y, "true_class": result.class_names[y], "predicted": p,
         "predicted_class": result.class_names[p]}
        for v, y, p in zip(result.video_ids, result.labels, result.predictions)])
    plot_confusion(result.confusion, result.class_names, paths["confusion_png"],
                   f"{meta['model_name']} on {Path(str(spec)).name}/{split}: top-1 {result.top1:.1%}, "
                   f"{clips} clip(s) x {crops} crop(s)")
    atomic_write_json(paths["json"], report)
    return report, paths
