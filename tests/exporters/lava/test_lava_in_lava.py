"""The export run in Lava itself: every netx partition, fed spikes recorded from 8 real moving-digits validation
clips (all 8 in one Lava run per partition; two runner processes, the default on 2 usable CPUs), gives
bit-exactly the spikes of our fixed-point emulation under Loihi2SimCfg(select_tag='fixed_pt'), clip by clip.

Needs the Lava side environment (Python 3.10 + lava-dl 0.6.0): ``$SVFORMER_LAVA_PYTHON`` if set, else the cached
venv, built here on first use (~1.5 min, ~5.4 GB). If it cannot be built the test FAILS with the reason
(:class:`LavaEnvironmentError`); it is never skipped.
"""

import json

import pytest

import svformer_deploy.exporters.lava as lava
from svformer_deploy import _threads
from svformer_deploy.cli import main
from svformer_deploy.exporters.lava.sideenv import lava_python


@pytest.mark.slow
def test_export_to_lava_is_bit_exact_in_lava(tiny_ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SVFORMER_LAVA_CLIPS", raising=False)  # the default: 8 clips per partition
    monkeypatch.delenv("SVFORMER_LAVA_WORKERS", raising=False)  # the default: one runner per usable CPU
    monkeypatch.setattr(_threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(lava, "_mem_available", lambda: None)
    python = lava_python(progress=print)  # builds the side environment on first use; raises (fails) if it cannot
    out = tmp_path / "bundle"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tiny_ckpt), "--to", "lava", "--out", str(out), "--num-videos", "8"])
    assert exit_info.value.code in (0, None), capsys.readouterr()
    report = json.loads((out / "verification.json").read_text())
    assert report["python"] == python and report["lava"]["lava_dl"] == "0.6.0"
    assert len(report["partitions"]) == 14
    for name, r in report["partitions"].items():
        assert r["bit_exact"] and r["lava_vs_emulation_mismatches"] == 0, name
        assert r["clips"] == 8 and r["clips_bit_exact"] == 8, name
        assert r["lava_timing"]["lava_runs"] == 1, name  # the 8 clips share one Lava run (concatenated in time)
        assert r["lava_timing"]["steps_run"] == 8 * (r["timesteps"] + r["layers"]), name
        assert r["input_spikes"] > 0, name  # real activity went in
    assert sum(r["lava_spikes"] for r in report["partitions"].values()) > 1000
    assert report["passed"] is True and report["all_bit_exact"] is True
    assert report["inputs"]["lava_clips"] == 8 and report["lava_workers"] == 2
    acc = report["accuracy"]
    assert acc["clips"] == 8 and 0.0 <= acc["top1_quantized"] <= 1.0
    printed = capsys.readouterr().out
    assert "BIT-EXACT" in printed
    assert "in 2 runner process(es)" in " ".join(printed.split())  # the terminal says how many runners ran
