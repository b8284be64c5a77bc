import pytest
import torch
from spikingjelly.activation_based import functional

from svformer_deploy.errors import ShapeMismatchError
from svformer_deploy.models.official import import_official
from tests.models.reference_svformer import ReferenceSVFormer, randomize_

SPEC = dict(embed_dim=(32, 64, 96, 128), depth=(1, 1, 2, 1), head_dim=32, mlp_ratio=2, num_classes=9, img_size=64, T=4)


def _slowfast_checkpoint(tmp_path, state_dict):
    # the layout SlowFast's checkpoint saver writes: DDP-prefixed model_state, epoch, optimizer, cfg dump
    path = tmp_path / "checkpoint_epoch_00010.pyth"
    torch.save({"epoch": 10, "model_state": {f"module.{k}": v for k, v in state_dict.items()},
                "optimizer_state": {"state": {}, "param_groups": []}, "cfg": "MODEL:\n  NUM_CLASSES: 9\n"}, path)
    return path


def test_import_official_reproduces_reference_logits(tmp_path):
    ref = randomize_(ReferenceSVFormer(**SPEC), seed=5).eval()
    path = _slowfast_checkpoint(tmp_path, ref.state_dict())
    model, report = import_official(path, "svformer_tiny", embed_dims=SPEC["embed_dim"], depths=SPEC["depth"],
                                    bn="per_timestep")
    assert report.inferred == {"num_classes": 9, "num_frames": 4, "img_size": 64}
    assert not report.ignored and len(report.matched) == len(model.state_dict())
    x = torch.randn(2, 3, 4, 64, 64) * 2
    with torch.no_grad():
        expected = ref(x)
        functional.reset_net(ref)
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_unused_file_tensors_are_reported_and_missing_ones_are_errors(tmp_path):
    ref = ReferenceSVFormer(**SPEC)
    sd = dict(ref.state_dict())
    sd["pos_drop.extra"] = torch.zeros(1)
    _, report = import_official(_slowfast_checkpoint(tmp_path, sd), "svformer_tiny", embed_dims=SPEC["embed_dim"],
                                depths=SPEC["depth"], bn="per_timestep")
    assert report.ignored == ["pos_drop.extra"]
    del sd["lpBN.weight"]
    with pytest.raises(ShapeMismatchError, match="local_path.bn.weight"):
        import_official(_slowfast_checkpoint(tmp_path, sd), "svformer_tiny", embed_dims=SPEC["embed_dim"],
                        depths=SPEC["depth"], bn="per_timestep")


def test_refused_official_checkpoint_names_the_file_keys_and_their_wrapper_prefix(tmp_path, capsys):
    """A state dict saved from a torch.compile'd model: every key carries '_orig_mod.'; the error (and the CLI's
    one line) names those keys and the prefix instead of 'unexpected []'."""
    from tests.helpers import run_cli

    ref = ReferenceSVFormer(**SPEC)
    path = tmp_path / "compiled.pyth"
    torch.save({"model_state": {f"_orig_mod.{k}": v for k, v in ref.state_dict().items()}}, path)
    with pytest.raises(ShapeMismatchError, match=r"unexpected \d+ \['_orig_mod\.") as err:
        import_official(path, "svformer_tiny", embed_dims=SPEC["embed_dim"], depths=SPEC["depth"], bn="per_timestep")
    assert "wrapper prefix '_orig_mod.' of torch.compile" in str(err.value)
    assert run_cli(["import-official", str(path), "--out", str(tmp_path / "x.pt"), "--model", "svformer_tiny"]) == 2
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and "'_orig_mod." in line and "torch.compile" in line
    assert not (tmp_path / "x.pt").exists()
