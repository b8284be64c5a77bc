import os
import subprocess
import sys

HEAVY = ["pandas", "matplotlib", "nir", "snntorch", "onnx", "onnxruntime", "av", "spikingjelly", "neurobench"]


def test_core_imports_pull_no_optional_dependency():
    code = ("import sys, svformer_deploy.models, svformer_deploy.cli; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "svformer_deploy", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "info" in r.stdout and "import-official" in r.stdout


def test_package_face_is_lazy_and_one_hop():
    """``import svformer_deploy`` loads no torch; every name in ``__all__`` is one attribute away and is the very
    object its defining module exports."""
    code = ("import sys, svformer_deploy as s; light = 'torch' not in sys.modules; "
            "import importlib; bad = [n for n in s.__all__ if n != '__version__' and "
            "getattr(s, n) is not getattr(importlib.import_module(s._EXPORTS[n]), n)]; print(light, bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True []"


def test_package_face_names_the_service_layer_and_the_registries():
    import svformer_deploy as s

    for name in ("create_model", "list_models", "load_checkpoint", "save_checkpoint", "record_spikes",
                 "list_targets", "list_profiles", "list_baselines", "export_and_verify", "verify", "evaluate",
                 "energy_report", "energy_price", "sparsity", "train"):
        assert name in s.__all__ and callable(getattr(s, name)), name
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        s.nope


LIGHT = ("import sys\nfrom svformer_deploy.cli import main\ntry:\n    main({args!r})\nexcept SystemExit as e:\n"
         "    print(e.code, 'torch' in sys.modules)\n")


def _cli_in_fresh_process(*args: str) -> str:
    code = LIGHT.format(args=list(args))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "OMP_NUM_THREADS": ""}).stdout.splitlines()[-1]


def test_help_and_usage_errors_never_import_torch():
    """``svformer-deploy --help`` answers in ~0.3 s because nothing imports torch (1.5-5 s here) before a command
    runs: not the top-level help, not a command's help, not a usage error."""
    assert _cli_in_fresh_process("--help") == "0 False"
    assert _cli_in_fresh_process("train", "--help") == "0 False"
    assert _cli_in_fresh_process("train", "--bogus") == "2 False"


def test_a_command_that_runs_sets_the_thread_count_first():
    code = ("import torch, sys\nfrom svformer_deploy._threads import usable_cpus\n"
            "from svformer_deploy.cli import main\ntorch.set_num_threads(7)\n"
            "try:\n    main(['models'])\nexcept SystemExit as e:\n"
            "    print(e.code, torch.get_num_threads() == usable_cpus())\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.splitlines()[-1] == "0 True"
