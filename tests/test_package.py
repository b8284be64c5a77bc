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
