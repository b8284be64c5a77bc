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
