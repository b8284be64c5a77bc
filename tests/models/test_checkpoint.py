import os
import pickle

import pytest
import torch

from svformer_deploy.assets import default_checkpoint

from svformer_deploy.errors import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    NonFiniteWeightsError,
    ShapeMismatchError,
    UnsafeCheckpointError,
)
from svformer_deploy.models import create_model, load_checkpoint, save_checkpoint
from svformer_deploy.models.checkpoint import read_checkpoint


@pytest.fixture
def model():
    m = create_model("svformer_tiny", num_classes=4, num_frames=4)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m.eval()


def test_roundtrip_rebuilds_model_from_file_alone(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.pt", model, class_names=list("abcd"), command="svformer-deploy train ...",
                           extra={"optimizer": {"step": torch.tensor(3)}})
    loaded, meta = load_checkpoint(path)
    assert loaded.config == model.config
    assert meta["class_names"] == list("abcd") and meta["model_name"] == "svformer_tiny"
    assert len(meta["sha256"]) == 64 and meta["extra"]["optimizer"]["step"].item() == 3
    x = torch.randn(2, *model.config.input_shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not loaded.training


def test_failed_write_leaves_nothing(tmp_path, model, monkeypatch):
    def broken(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "m.pt", model)
    assert os.listdir(tmp_path) == []


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


NOT_CHECKPOINTS = {
    "random": bytes(range(256)) * 4 + b"\x80\x02}q\x00",
    "text": b"hello, this is a text file renamed .pt\n",
    "five_bytes": b"hello",
    "empty": b"",
    "pickle_protocol_byte": b"\x80",
}


@pytest.mark.parametrize("kind", sorted(NOT_CHECKPOINTS))
def test_not_a_checkpoint_is_one_clear_error(tmp_path, kind, capsys):
    """Any bytes that are not a PyTorch file (the parser fails with KeyError, IndexError, EOFError, ...) give a
    CheckpointFormatError naming the file, never torch's advice to retry with weights_only=False."""
    from tests.helpers import run_cli

    p = tmp_path / f"{kind}.pt"
    p.write_bytes(NOT_CHECKPOINTS[kind])
    what = "an empty file" if kind == "empty" else "not a zip archive"
    with pytest.raises(CheckpointFormatError, match=rf"is not a PyTorch checkpoint \({what}\); pass a checkpoint "
                                                    "written by svformer-deploy") as err:
        load_checkpoint(p)
    assert str(p) in str(err.value) and "weights_only" not in str(err.value) and "truncated" not in str(err.value)
    assert str(default_checkpoint()) in str(err.value)
    assert run_cli(["info", str(p)]) == 2
    out = capsys.readouterr()
    assert out.err.count("\n") == 1 and out.err.startswith("error: ") and "Traceback" not in out.err


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_file(tmp_path, model, keep):
    p = save_checkpoint(tmp_path / "m.pt", model)
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointFormatError) as err:
        load_checkpoint(p)
    assert str(err.value) == (f"{p} is a truncated or corrupt archive (a PyTorch file cut short or damaged); "
                              "re-copy it from where it came from, or re-train it")  # no cut-off torch text


def test_a_pytorch_file_that_is_not_ours_says_so(tmp_path):
    p = tmp_path / "weights ü.pt"
    torch.save({"conv.weight": torch.zeros(2)}, p)
    with pytest.raises(CheckpointFormatError, match="is a PyTorch file but not an svformer-deploy checkpoint "
                                                    r"\(no config\); .*import-official") as err:
        load_checkpoint(p)
    assert str(p) in str(err.value) and str(default_checkpoint()) in str(err.value)


MISSING = [["export", "{m}", "--to", "onnx", "--out", "{o}"], ["sparsity", "{m}", "--out", "{o}"],
           ["energy", "report", "{m}", "--out", "{o}"], ["evaluate", "{m}", "--out", "{o}"],
           ["finetune", "{m}", "--out", "{o}", "--spike-budget", "0.05"], ["info", "{m}"]]


@pytest.mark.parametrize("argv", MISSING, ids=[a[0] if a[0] != "energy" else "energy report" for a in MISSING])
def test_a_missing_checkpoint_is_the_same_message_on_every_command(argv, tmp_path, capsys):
    from tests.helpers import run_cli

    missing = tmp_path / "mö del.pt"
    assert run_cli([a.format(m=missing, o=tmp_path / "out") for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: checkpoint {missing} does not exist; check the path, train one with `svformer-deploy "
                   f"train`, or use the shipped one, {default_checkpoint()}")
    assert not (tmp_path / "out").exists()


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/svformer_pwned",))


def test_pickle_with_arbitrary_objects_is_refused_and_not_executed(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"format": "svformer-deploy-checkpoint", "payload": Evil()}, p)
    if os.path.exists("/tmp/svformer_pwned"):
        os.unlink("/tmp/svformer_pwned")
    with pytest.raises(UnsafeCheckpointError, match="arbitrary code"):
        load_checkpoint(p)
    assert not os.path.exists("/tmp/svformer_pwned")
    # a raw pickle file (not a torch zip) is refused as well
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(Evil()))
    with pytest.raises((UnsafeCheckpointError, CheckpointFormatError)):
        load_checkpoint(raw)
    assert not os.path.exists("/tmp/svformer_pwned")


def test_foreign_checkpoint_points_to_import_official(tmp_path, model):
    p = tmp_path / "sd.pt"
    torch.save(model.state_dict(), p)
    with pytest.raises(CheckpointFormatError, match="import_official"):
        load_checkpoint(p)


def test_shape_mismatch_names_tensor(tmp_path, model):
    p = save_checkpoint(tmp_path / "m.pt", model)
    payload = read_checkpoint(p)
    payload["config"]["num_classes"] = 7
    torch.save(payload, p)
    with pytest.raises(ShapeMismatchError, match="head.fc.weight"):
        load_checkpoint(p)


def test_nan_weights(tmp_path, model):
    with torch.no_grad():
        model.blocks1[0].conv1.weight[0, 0, 0, 0] = float("nan")
    p = save_checkpoint(tmp_path / "m.pt", model)
    with pytest.raises(NonFiniteWeightsError, match="blocks1.0.conv1.weight"):
        load_checkpoint(p)


def test_newer_format_version_is_refused(tmp_path, model):
    p = save_checkpoint(tmp_path / "m.pt", model)
    payload = read_checkpoint(p)
    payload["format_version"] = 99
    torch.save(payload, p)
    with pytest.raises(CheckpointFormatError, match="upgrade"):
        load_checkpoint(p)


def test_written_file_has_ordinary_permissions(tmp_path, model):
    umask = os.umask(0o022)
    try:
        p = save_checkpoint(tmp_path / "m.pt", model)
    finally:
        os.umask(umask)
    assert (p.stat().st_mode & 0o777) == 0o644


@pytest.mark.parametrize("wrap", ["compile", "compile+dataparallel"])
def test_save_unwraps_torch_compile_and_data_parallel(tmp_path, model, wrap):
    wrapped = torch.compile(model) if wrap == "compile" else torch.compile(torch.nn.DataParallel(model))
    assert any(k.startswith("_orig_mod.") for k in wrapped.state_dict())
    p = save_checkpoint(tmp_path / "m.pt", wrapped)
    keys = list(read_checkpoint(p)["state_dict"])
    assert keys == list(model.state_dict())
    loaded, _ = load_checkpoint(p)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_refused_state_dict_names_unmatched_keys_and_wrapper_prefix(tmp_path, model):
    p = save_checkpoint(tmp_path / "m.pt", model)
    payload = read_checkpoint(p)
    payload["state_dict"] = {f"_orig_mod.{k}": v for k, v in payload["state_dict"].items()}
    torch.save(payload, p)
    with pytest.raises(ShapeMismatchError) as err:
        load_checkpoint(p)
    msg = str(err.value)
    assert "unexpected" in msg and "'_orig_mod.blocks1.0.bn.bias'" in msg and "missing" in msg
    assert "wrapper prefix '_orig_mod.' of torch.compile" in msg and "\n" not in msg
