"""The demo: a checkpoint stage, then registered steps, each printing its artefacts; demo.json lists them."""

from __future__ import annotations

import json

import pytest
import torch

from svformer_deploy import demo as demo_mod
from svformer_deploy.errors import ExportError, OutputExistsError

TINY = {"epochs": 1, "train_clips": 32, "batch_size": 8, "val_videos": 20,
        "model_overrides": {"img_size": 32, "num_frames": 4}}


def test_demo_trains_evaluates_and_lists_artefacts(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    calls = []

    def fake_export(ckpt, out_dir):
        calls.append((ckpt, out_dir))
        out_dir.mkdir(parents=True)
        (out_dir / "model.nir").write_text("x")
        return {"nir": out_dir / "model.nir"}

    def broken(ckpt, out_dir):
        raise ExportError("no rule for layer x; fix it")

    monkeypatch.setitem(demo_mod._STEPS, "export-test", fake_export)
    monkeypatch.setitem(demo_mod._STEPS, "broken", broken)
    lines: list[str] = []
    report = demo_mod.run_demo(tmp_path / "out", recipe=TINY, progress=False, echo=lines.append,
                               steps=["evaluate", "export-test", "broken"])
    assert list(demo_mod.demo_steps())[:1] == ["evaluate"]
    assert report.checkpoint == tmp_path / "out" / "train" / "best.pt" and report.checkpoint.exists()
    assert calls == [(report.checkpoint, tmp_path / "out" / "export-test")]
    assert report.failures == {"broken": "no rule for layer x; fix it"}
    summary = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert summary["artefacts"]["evaluate"]["json"].endswith("eval.json")
    assert summary["artefacts"]["export-test"]["nir"].endswith("model.nir")
    ev = json.loads((tmp_path / "out" / "evaluate" / "eval.json").read_text())
    assert ev["num_videos"] == 1000 and ev["views_per_video"] == 1
    text = "\n".join(lines)
    assert "[evaluate]" in text and "confusion_png:" in text and "[broken] FAILED" in text
    assert lines[-1].startswith("demo finished in ") and lines[-1].endswith(" min)")  # the wall time, last
    with pytest.raises(OutputExistsError, match="--force"):
        demo_mod.run_demo(tmp_path / "out", recipe=TINY, progress=False, echo=lines.append)


def test_demo_pretrained_uses_the_shipped_checkpoint(tmp_path):
    from svformer_deploy.assets import default_checkpoint

    torch.set_num_threads(1)
    report = demo_mod.run_demo(tmp_path / "out", pretrained=True, steps=["evaluate"], echo=lambda s: None)
    assert report.checkpoint.read_bytes() == default_checkpoint().read_bytes()
    ev = json.loads((tmp_path / "out" / "evaluate" / "eval.json").read_text())
    assert ev["top1"] >= 0.95 and ev["num_videos"] == 1000 and not report.failures


def test_every_demo_step_is_registered_callable_and_documented():
    """Registry contract: every step ``demo_steps()`` returns takes (checkpoint, out_dir), states what it does in
    a docstring, and has its row in docs/training.md's step table."""
    import inspect
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text(encoding="utf-8")
    steps = demo_mod.demo_steps()
    assert steps
    for name, fn in steps.items():
        assert len(inspect.signature(fn).parameters) == 2, name
        assert (fn.__doc__ or "").strip(), f"demo step {name!r} has no docstring"
        assert f"| `{name}` |" in doc, f"demo step {name!r} has no row in docs/training.md"
