"""`svformer-deploy export` / `verify` in-process, on real moving-digits validation clips."""

import json

from svformer_deploy.exporters.bundle import VERIFICATION_NAME
from svformer_deploy.models import save_checkpoint
from tests.helpers import run_cli

from .conftest import active_model


def test_export_nir_then_verify(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "bundle"
    assert run_cli(["export", str(tiny_ckpt), "--to", "nir", "--out", str(out), "--num-videos", "4"]) == 0
    text = capsys.readouterr().out
    assert "verdict: exact" in text or "verdict: threshold" in text, text
    assert "loading clips" not in text and "verifying" not in text  # progress goes to stderr, results to stdout
    report = json.loads((out / VERIFICATION_NAME).read_text())
    assert report["clips"] == 4 and report["data"].startswith("moving-digits") and report["top1_model"] is not None
    assert run_cli(["export", str(tiny_ckpt), "--to", "nir", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert run_cli(["verify", str(out), "--num-videos", "2"]) == 0
    text = capsys.readouterr().out
    assert "verdict: " in text and "verifying" not in text


def test_export_without_out_writes_beside_the_checkpoint_and_names_it_last(tiny_ckpt, tmp_path, capsys):
    """Issue 26: `export CKPT --to nir` without --out stopped with "Missing option '--out'" (exit 2). Now the
    bundle goes beside the checkpoint, named after it and the target (tiny.pt -> tiny-nir), the last line names
    it, and a second run is refused without --force, as any existing --out is."""
    import shutil

    ckpt = tmp_path / "runs" / "tiny.pt"
    ckpt.parent.mkdir()
    shutil.copyfile(tiny_ckpt, ckpt)
    argv = ["export", str(ckpt), "--to", "nir", "--videos", "1"]
    assert run_cli(argv) == 0, capsys.readouterr().err
    out = tmp_path / "runs" / "tiny-nir"
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"wrote {out}"
    assert (out / VERIFICATION_NAME).is_file() and sorted(p.name for p in ckpt.parent.iterdir()) == ["tiny-nir",
                                                                                                   "tiny.pt"]
    before = (out / VERIFICATION_NAME).read_bytes()
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert f"{out} already exists" in err and "--force" in err and err.count("\n") == 1
    assert (out / VERIFICATION_NAME).read_bytes() == before
    assert run_cli([*argv, "--force"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"wrote {out}"


def test_verify_refuses_a_different_checkpoint(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "bundle"
    onnx_out = str(tmp_path / "onnx")
    assert run_cli(["export", str(tiny_ckpt), "--to", "onnx", "--out", onnx_out, "--num-videos", "2"]) == 0
    assert (tmp_path / "onnx" / VERIFICATION_NAME).is_file()
    other = tmp_path / "other.pt"
    save_checkpoint(other, active_model(seed=5))
    assert run_cli(["verify", str(tmp_path / "onnx"), "--checkpoint", str(other), "--num-videos", "2"]) == 2
    assert "not the one" in capsys.readouterr().err
    assert not out.exists()


def test_per_timestep_refused_then_approximated(tmp_path, capsys):
    ckpt = tmp_path / "pt.pt"
    save_checkpoint(ckpt, active_model(bn="per_timestep"))
    assert run_cli(["export", str(ckpt), "--to", "nir", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "per-timestep BatchNorm" in err and "--approximate-bn" in err and "finetune CKPT --bn shared" in err
    assert not (tmp_path / "b").exists()
    assert run_cli(["export", str(ckpt), "--to", "nir", "--out", str(tmp_path / "b"), "--approximate-bn",
                 "--num-videos", "2"]) == 0
    assert "approximation: per-timestep BatchNorm folded" in capsys.readouterr().out


def test_unknown_target(tiny_ckpt, tmp_path, capsys):
    assert run_cli(["export", str(tiny_ckpt), "--to", "loihi9", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "export with --to nir | onnx | lava" in err and "verify-only runtimes (verify BUNDLE --target): nir-norse" in err


def test_verify_after_the_checkpoint_moved_names_the_fix(tiny_ckpt, tmp_path, capsys):
    import shutil

    ckpt = tmp_path / "model.pt"
    shutil.copyfile(tiny_ckpt, ckpt)
    out = tmp_path / "bundle"
    assert run_cli(["export", str(ckpt), "--to", "nir", "--out", str(out), "--num-videos", "1"]) == 0
    moved = ckpt.rename(tmp_path / "moved.pt")
    capsys.readouterr()
    assert run_cli(["verify", str(out), "--num-videos", "1"]) == 2
    err = capsys.readouterr().err
    assert "no longer exists" in err and "--checkpoint" in err and len(err.strip().splitlines()) == 1
    assert run_cli(["verify", str(out), "--checkpoint", str(moved), "--num-videos", "1"]) == 0


SLOW_VERIFY = """
import sys, time
import svformer_deploy.exporters as ex
def slow(*args, **kwargs):
    print("verifying", flush=True)
    time.sleep(120)
ex.verify_export = slow
from svformer_deploy.cli import main
main(sys.argv[1:])
"""


def test_sigterm_during_verification_leaves_no_unverified_bundle(tiny_ckpt, tmp_path):
    """``kill`` / ``timeout`` while the bundle is being verified: exit 143 and neither the bundle nor a temporary
    folder is left (an export is its verification; a bundle never verified is a half-written output)."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "bundle"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_VERIFY, "export", str(tiny_ckpt), "--to", "onnx", "--out",
                             str(out), "--num-videos", "1"], stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(root)})
    try:
        for line in proc.stdout:  # progress bars may come first
            if line.strip().endswith("verifying"):
                break
        assert out.is_dir()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        proc.kill()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_exit_status_follows_the_verdict_as_help_and_docs_say(tmp_path, capsys, monkeypatch):
    """``threshold`` (goal not met, no mapping error) exits 0, ``failed`` exits 1: what ``--help`` and
    docs/export.md state."""
    from pathlib import Path

    import svformer_deploy.api as api
    from svformer_deploy.exporters import ExportResult

    def fake(verdict, passed):
        report = {"verdict": verdict, "passed": passed, "goal_met": False}
        return lambda *a, **k: ExportResult(Path(tmp_path), report, Path(tmp_path) / "v.json", f"verdict: {verdict}")

    for verdict, passed, code in [("threshold", True, 0), ("approximate", None, 0), ("failed", False, 1)]:
        monkeypatch.setattr(api, "export_and_verify", fake(verdict, passed))
        monkeypatch.setattr(api, "verify", fake(verdict, passed))
        assert (run_cli(["export", "x.pt", "--to", "onnx", "--out", str(tmp_path / "o")]) or 0) == code, verdict
        assert (run_cli(["verify", str(tmp_path)]) or 0) == code, verdict
    capsys.readouterr()
    assert run_cli(["export", "--help"]) in (0, None)
    text = " ".join(capsys.readouterr().out.split())
    assert "Exits 1 only when verification fails (verdict failed" in text.replace("`", "")
    assert "threshold" in text and "misses its goal" not in text
