"""The demo: a checkpoint stage, then registered steps, each printing its artefacts; demo.json lists them."""

from __future__ import annotations

import json
import threading
import time

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


def _fake_lava_build(tmp_path, monkeypatch, pip_mode: str):
    """A Lava side-env build that runs no network: a fake Python 3.10 whose pip is ``slow`` or ``hang``s, into
    ``tmp_path/cache/venv``, logging each pip call to ``tmp_path/pip.log``."""
    from svformer_deploy.exporters.lava import sideenv
    from tests.exporters.lava.test_lava_sideenv import FAKE_PYTHON

    py = tmp_path / "python3.10"
    py.write_text(FAKE_PYTHON)
    py.chmod(0o755)
    monkeypatch.setattr(sideenv, "find_python310", lambda: [str(py)])
    monkeypatch.delenv("SVFORMER_LAVA_PYTHON", raising=False)
    monkeypatch.setenv("SVFORMER_LAVA_VENV", str(tmp_path / "cache" / "venv"))
    monkeypatch.setenv("FAKE_PIP_LOG", str(tmp_path / "pip.log"))
    monkeypatch.setenv("FAKE_PIP", pip_mode)
    return sideenv


def test_demo_builds_the_lava_env_in_the_background_and_the_lava_step_waits_for_it(tmp_path, monkeypatch):
    """The build starts before the checkpoint stage; the Lava step gets its interpreter; demo.json and the last
    lines report the build's time and how long the Lava step waited."""
    sideenv = _fake_lava_build(tmp_path, monkeypatch, "slow")
    got = []

    def lava_step(ckpt, out_dir):
        got.append(sideenv.lava_python())
        return {}

    from svformer_deploy import assets

    shipped, building_at_checkpoint = assets.default_checkpoint, []

    def checkpoint_stage():  # the checkpoint stage starts while the build runs
        building_at_checkpoint.append(any(t.name == "lava-side-env" for t in threading.enumerate()))
        return shipped()

    monkeypatch.setattr(assets, "default_checkpoint", checkpoint_stage)
    monkeypatch.setitem(demo_mod._STEPS, "export-lava", lava_step)
    lines: list[str] = []
    report = demo_mod.run_demo(tmp_path / "out", pretrained=True, steps=["export-lava"], echo=lines.append)
    assert building_at_checkpoint == [True]
    assert got == [str(tmp_path / "cache" / "venv" / "bin" / "python")] and not report.failures
    assert any(line.startswith("[lava-env] Building the Lava side environment") for line in lines)
    assert len((tmp_path / "pip.log").read_text().splitlines()) == 1
    seconds = json.loads((tmp_path / "out" / "demo.json").read_text())["seconds"]
    assert seconds["lava-env build (background)"] >= 2 and seconds["lava-env wait"] > 0
    assert lines[-2].startswith("seconds per step: checkpoint ") and "lava-env wait" in lines[-2]
    assert lines[-1].startswith("demo finished in ")


def test_interrupted_demo_stops_the_lava_env_build_and_leaves_nothing(tmp_path, monkeypatch):
    from svformer_deploy import api

    _fake_lava_build(tmp_path, monkeypatch, "hang")

    def interrupted_training(*args, **kwargs):
        t0 = time.monotonic()
        while not (tmp_path / "pip.log").exists():  # Ctrl-C while the build is installing
            assert time.monotonic() - t0 < 30
            time.sleep(0.05)
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "train", interrupted_training)
    with pytest.raises(KeyboardInterrupt):
        demo_mod.run_demo(tmp_path / "out", recipe=TINY, echo=lambda s: None)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["venv.lock"]
    assert not [t for t in threading.enumerate() if t.name == "lava-side-env"]
