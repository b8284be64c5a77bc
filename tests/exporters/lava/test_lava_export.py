"""The Lava bundle: netx files written atomically, read back bit for bit, every operation accounted for."""

import json
import sys

import h5py
import numpy as np
import pytest

import torch

from svformer_deploy.errors import BundleFormatError, LavaEnvironmentError, OutputExistsError, UnsupportedLayerError
from svformer_deploy.exporters import read_bundle
from svformer_deploy.exporters.host_ops import HOST_OPS
from svformer_deploy.exporters.lava.hybrid import emulation_runtime, quantized_partitions_active
from svformer_deploy.exporters.lava.export import export_lava
from svformer_deploy.exporters.lava.netx import read_netx
from svformer_deploy.exporters.lava.verify import load_lava_bundle
from svformer_deploy.exporters.runtime import load_host_params, run_bundle
from svformer_deploy.exporters.compare import coverage_problems
from svformer_deploy.models import create_model
from tests.exporters.conftest import active_model, clips


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = active_model()
    out = tmp_path_factory.mktemp("lava") / "bundle"
    path, manifest, qparts = export_lava(model, out, checkpoint_sha256="ab" * 32, class_names=list("0123456789"))
    return model, path, manifest, qparts


def test_bundle_covers_every_operation_once(exported):
    model, path, manifest, qparts = exported
    assert read_bundle(path).target == "lava"
    assert coverage_problems(model, manifest.graph.covered_modules()) == []
    host = manifest.host_ops[0]
    assert host.op == "svformer_float_host" and host.op in HOST_OPS
    last = host.attrs["partitions"]["patch_embed3.lif>head.lif"]["taps"][-1]
    assert last["neuron"] == "head.lif" and last["channels"] == [0, 128]
    assert "blocks1.0.lif" in host.modules and "blocks1.0.mlp.lif2" not in host.modules


def test_shared_bundle_runner_runs_the_lava_bundle(exported):
    """run_bundle executes the Lava bundle's host op from the registry, calling each netx partition through a
    partition runtime (here the bit-exact emulation): the logits are the quantised hybrid model's, and they
    differ from the float model's only by quantisation (same top-1 on most clips)."""
    model, path, manifest, qparts = exported
    x = clips(2)
    run = run_bundle(read_bundle(path), load_host_params(path), x, run_partition=emulation_runtime(qparts))
    with torch.no_grad():
        float_logits = model(x)
        with quantized_partitions_active(model, qparts):
            want = model(x)
    assert torch.equal(run.logits, want) and not torch.equal(run.logits, float_logits)
    with pytest.raises(BundleFormatError, match="partition runtime"):
        run_bundle(read_bundle(path), load_host_params(path), x)


def test_netx_files_hold_the_quantised_integers(exported):
    _, path, manifest, qparts = exported
    for spec, q in zip(manifest.partitions, qparts):
        layers, meta = read_netx(path / spec.file)
        assert meta["partition"] == spec.name
        for got, want in zip(layers, q.layers):
            assert np.array_equal(got.weight, want.weight) and np.array_equal(got.bias, want.bias)
            assert (got.exponent, got.v_decay, got.stride, got.padding) == (want.exponent, want.v_decay, want.stride,
                                                                           want.padding)
            assert got.weight.min() >= -128 and got.weight.max() <= 127
        with h5py.File(path / spec.file) as f:  # the layout netx reads
            assert f["layer/0/type"][0] == b"input" and list(f["layer/0/shape"][()]) == list(q.source.shape)
            assert f["layer/1/type"][0] == b"conv" and f["layer/1/neuron/type"][0] == b"CUBA"
            assert int(f["layer/1/neuron/iDecay"][()]) == 4096
            assert int(f["layer/1/neuron/vThMant"][()]) == 1 << q.layers[0].exponent


def test_bundle_reloads_as_the_same_model(exported):
    model, path, _, qparts = exported
    _, reloaded, parts = load_lava_bundle(path)
    sd = model.state_dict()
    assert all(np.array_equal(v.numpy(), sd[k].numpy()) for k, v in reloaded.state_dict().items())
    assert [p.name for p in parts] == [p.name for p in qparts]


def test_existing_output_is_kept_and_failed_export_leaves_nothing(exported, tmp_path):
    _, path, _, _ = exported
    before = json.loads((path / "manifest.json").read_text())
    with pytest.raises(OutputExistsError):
        export_lava(active_model(), path, checkpoint_sha256="cd" * 32)
    assert json.loads((path / "manifest.json").read_text()) == before
    with pytest.raises(UnsupportedLayerError, match="per_timestep"):
        export_lava(create_model("svformer_tiny", bn="per_timestep").eval(), tmp_path / "b", checkpoint_sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_interpreter_without_lava_is_reported(monkeypatch):
    from svformer_deploy.exporters.lava.sideenv import lava_python

    monkeypatch.setenv("SVFORMER_LAVA_PYTHON", sys.executable)  # the main env has no lava-dl
    with pytest.raises(LavaEnvironmentError, match="cannot import lava-dl"):
        lava_python()


def test_missing_python310_says_why(monkeypatch, tmp_path):
    from svformer_deploy.exporters.lava.sideenv import lava_python

    monkeypatch.delenv("SVFORMER_LAVA_PYTHON", raising=False)
    monkeypatch.delenv("PYENV_ROOT", raising=False)
    monkeypatch.setenv("SVFORMER_LAVA_VENV", str(tmp_path / "venv"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no pyenv, no python3.10
    with pytest.raises(LavaEnvironmentError, match=r"needs Python 3\.10 and none was found.*SVFORMER_LAVA_PYTHON"):
        lava_python()
    assert not (tmp_path / "venv").exists()


@pytest.mark.parametrize("name, value", [("SVFORMER_LAVA_CLIPS", "two"), ("SVFORMER_LAVA_CLIPS", "0"),
                                         ("SVFORMER_LAVA_CLIPS", "1.5"), ("SVFORMER_LAVA_WORKERS", "-1"),
                                         ("SVFORMER_LAVA_WORKERS", "\u00b2")])
def test_a_bad_lava_run_setting_is_one_line_before_anything_is_written(name, value, tmp_path, monkeypatch, capsys):
    from svformer_deploy.assets import default_checkpoint
    from tests.helpers import run_cli

    monkeypatch.setenv(name, value)
    out = tmp_path / "bundle"
    assert run_cli(["export", str(default_checkpoint()), "--to", "lava", "--out", str(out), "--num-videos", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err and ">= 1" in err, err
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("cpus, mem_runners, expected", [(2, 8, 2), (6, 8, 6), (6, 3.5, 3), (4, 0.5, 1), (1, 8, 1),
                                                         (5, None, 5)])
def test_default_lava_workers_follow_the_usable_cpus_and_free_memory(cpus, mem_runners, expected, monkeypatch):
    import svformer_deploy.exporters.lava as lava
    from svformer_deploy import _threads

    monkeypatch.delenv("SVFORMER_LAVA_WORKERS", raising=False)
    monkeypatch.setattr(_threads, "usable_cpus", lambda: cpus)
    monkeypatch.setattr(lava, "_mem_available",
                        lambda: None if mem_runners is None else int(mem_runners * lava.RUNNER_MEMORY))
    assert lava.default_lava_workers() == expected
    assert lava.lava_run_settings() == (8, expected)


def test_svformer_lava_workers_overrides_the_default(monkeypatch):
    import svformer_deploy.exporters.lava as lava
    from svformer_deploy import _threads

    monkeypatch.setattr(_threads, "usable_cpus", lambda: 16)
    monkeypatch.setattr(lava, "_mem_available", lambda: None)
    monkeypatch.setenv("SVFORMER_LAVA_WORKERS", "1")
    assert lava.lava_run_settings()[1] == 1
    monkeypatch.setenv("SVFORMER_LAVA_WORKERS", "3")
    assert lava.lava_run_settings()[1] == 3


@pytest.mark.parametrize("value, clips, workers", [("", 8, 5), ("   ", 8, 5), ("\t\n", 8, 5), (" 2 ", 2, 2),
                                                   ("3\n", 3, 3), ("12", 12, 12)])
def test_an_empty_lava_run_setting_means_the_default_and_spaces_around_a_number_are_ignored(value, clips, workers,
                                                                                             monkeypatch):
    import svformer_deploy.exporters.lava as lava
    from svformer_deploy import _threads

    monkeypatch.setattr(_threads, "usable_cpus", lambda: 5)
    monkeypatch.setattr(lava, "_mem_available", lambda: None)
    monkeypatch.setenv("SVFORMER_LAVA_CLIPS", value)
    monkeypatch.setenv("SVFORMER_LAVA_WORKERS", value)
    assert lava.lava_run_settings() == (clips, workers)


@pytest.mark.parametrize("value", ["two", "0", "-1", "+3", "1.5", "2 2", "1e3", "\u00b2", "\u0663", "0x10"])
def test_a_lava_run_setting_that_is_not_a_whole_number_from_1_is_refused(value, monkeypatch):
    from svformer_deploy.errors import ConfigError
    from svformer_deploy.exporters.lava import lava_run_settings

    monkeypatch.delenv("SVFORMER_LAVA_CLIPS", raising=False)
    monkeypatch.setenv("SVFORMER_LAVA_WORKERS", value)
    with pytest.raises(ConfigError, match=r"^SVFORMER_LAVA_WORKERS='.*' is not a whole number >= 1; set it to e\.g\. "
                                          r"\d+, or unset it$"):
        lava_run_settings()


def test_mem_available_reads_meminfo(tmp_path):
    from svformer_deploy.exporters.lava import _mem_available

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:    3145728 kB\n")
    assert _mem_available(meminfo) == 3 << 30
    meminfo.write_text("MemTotal:       24000000 kB\n")  # a kernel too old to say: no memory cap
    assert _mem_available(meminfo) is None
    assert _mem_available(tmp_path / "missing") is None


def test_runner_progress_lines_are_never_wrapped_inside_a_number(capsys):
    """The runners' lines reach stderr whole (they were hard-wrapped at 80 columns: "in one run, 1.546\\n s")."""
    from svformer_deploy.exporters.lava import _progress

    line = ("[lava-runner] blocks3.0.attn.partition_with_a_long_name: 8 clip(s) in one run, 1.546 s "
            "(0.193 s per clip, 12,345,678 spikes)")
    _progress(line)
    assert capsys.readouterr().err == line + "\n"
