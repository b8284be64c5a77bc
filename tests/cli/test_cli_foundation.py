import subprocess
import sys

import pytest
import torch

from svformer_deploy.cli import main
from svformer_deploy.models import create_model, save_checkpoint
from tests.helpers import run_cli
from tests.models.reference_svformer import ReferenceSVFormer


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_info_on_registered_name(capsys):
    code, out, _ = run(["info", "svformer_ucf101"], capsys)
    assert code == 0
    assert "13,801,612" in out and "(B, 3, 16, 224, 224)" in out and "blocks3.2.attn.lif_q" in out
    assert "(16, 1, 6, 196, 64)" in out  # Q spikes: (T, B, heads, N, d)


def test_models_lists_the_configs_and_the_shipped_checkpoints_a_user_can_pass_on(capsys):
    from svformer_deploy.models import load_checkpoint

    code, out, _ = run(["models"], capsys)
    assert code == 0 and out.startswith("svformer_small ")
    from pathlib import Path

    shipped = [ln.strip().split("  (")[0] for ln in out.splitlines() if ln.startswith("  ")]
    assert [Path(p).name for p in shipped] == ["svformer_tiny_moving_digits.pt",
                                               "svformer_tiny_moving_digits_per_timestep_bn.pt"]
    bns = [load_checkpoint(p)[0].config.bn for p in shipped]
    assert bns == ["shared", "per_timestep"]


def test_info_on_checkpoint(tmp_path, capsys):
    p = save_checkpoint(tmp_path / "m.pt", create_model("svformer_tiny"), command="unit test")
    code, out, _ = run(["info", str(p)], capsys)
    assert code == 0 and "609,443" in out and "unit test" in out


@pytest.mark.parametrize("arg,needle", [("svformer_huge", "unknown model"), ("missing.pt", "does not exist")])
def test_bad_input_is_one_line_on_stderr_and_exit_2(arg, needle, capsys, tmp_path):
    code, out, err = run(["info", str(tmp_path / arg) if arg.endswith(".pt") else arg], capsys)
    assert code == 2 and needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_corrupt_checkpoint_via_console_script_and_debug_traceback(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00not a checkpoint")
    r = subprocess.run([sys.executable, "-m", "svformer_deploy", "info", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "svformer_deploy", "--debug", "info", str(bad)], capture_output=True,
                       text=True)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_import_official_command(tmp_path, capsys):
    ref = ReferenceSVFormer(embed_dim=(128, 256, 384, 512), depth=(1, 1, 3, 1), head_dim=64, mlp_ratio=2,
                            num_classes=51, img_size=224, T=16)
    src = tmp_path / "official.pyth"
    torch.save({"model_state": {f"module.{k}": v for k, v in ref.state_dict().items()}, "epoch": 1}, src)
    out = tmp_path / "ours.pt"
    code, stdout, _ = run(["import-official", str(src), "--out", str(out)], capsys)
    assert code == 0 and "'num_classes': 51" in stdout and out.exists()
    code, _, err = run(["import-official", str(src), "--out", str(out)], capsys)
    assert code == 2 and "--force" in err
    # the wrong config: svformer_tiny's widths do not fit, nothing is written
    out2 = tmp_path / "tiny.pt"
    code, _, err = run(["import-official", str(src), "--out", str(out2), "--model", "svformer_tiny"], capsys)
    assert code == 2 and "wrong shape" in err and not out2.exists()


@pytest.mark.parametrize("command", [
    ["export", "{ckpt}", "--to", "nir", "--out", "{blocker}/sub", "--num-videos", "1"],
    ["energy", "report", "{ckpt}", "--videos", "1", "--out", "{blocker}/sub"],
    ["sparsity", "{ckpt}", "--videos", "1", "--out", "{blocker}/sub"],
])
def test_out_below_a_file_is_one_line_and_exit_2(command, tmp_path, capsys):
    """An --out whose parent is a file cannot be created: one line naming the path, exit 2, no traceback, before
    any work (no progress line before the error)."""
    from svformer_deploy.assets import default_checkpoint

    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    argv = [a.format(ckpt=default_checkpoint(), blocker=blocker) for a in command]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(blocker) in err and len(err.strip().splitlines()) == 1
    assert blocker.read_text() == "not a folder"
