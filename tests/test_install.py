"""Installing beside a user's torch: the metadata asks for ranges only, the exact versions CI and the README use
live in constraints.txt (inside those ranges), the oldest edge of tools/compat.sh installs every floor, and the
sdist / wheel hold what the package needs outside the checkout (tools/check_dist.py)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (this test reads the checkout, not the wheel)

ROOT = Path(__file__).resolve().parents[1]
if not (ROOT / "pyproject.toml").is_file():  # tools/compat.sh runs the tests beside an installed wheel
    pytest.skip("reads the checkout's pyproject.toml and constraints", allow_module_level=True)
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
DIRECT = [Requirement(r) for r in PROJECT["dependencies"]]
TEST = [Requirement(r) for r in PROJECT["optional-dependencies"]["test"]]


def _pins(path: Path) -> dict[str, Version]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[Requirement(name).name.lower().replace("_", "-")] = Version(version)
    return pins


def _key(req: Requirement) -> str:
    return req.name.lower().replace("_", "-")


def test_metadata_asks_for_ranges_python_3_10_to_3_13_and_torch_2_4_to_2_14():
    assert PROJECT["requires-python"] == ">=3.10,<3.14"
    for req in DIRECT + TEST:
        assert req.specifier and not any(s.operator in ("==", "===") for s in req.specifier), str(req)
    torch = next(r for r in DIRECT if r.name == "torch")
    assert all(torch.specifier.contains(v) for v in ("2.4.0", "2.4.1", "2.9.1", "2.11.0", "2.14.1"))
    assert not torch.specifier.contains("2.3.1")  # the floor: torch.library.custom_op / register_fake


def test_constraints_pin_every_dependency_inside_its_range():
    pins = _pins(ROOT / "constraints.txt")
    for req in DIRECT + TEST:
        assert _key(req) in pins, f"constraints.txt does not pin {req.name}"
        assert req.specifier.contains(pins[_key(req)]), f"constraints.txt pins {req.name} {pins[_key(req)]}, " \
                                                        f"outside {req.specifier}"


def test_the_oldest_edge_installs_every_floor():
    """tools/compat/oldest.txt pins each direct and test dependency at the lowest release its range admits (the
    floor, or its first patch release where the .0 has no wheel for Python 3.10), so compat.sh proves the floors."""
    pins = _pins(ROOT / "tools" / "compat" / "oldest.txt")
    for req in DIRECT + TEST:
        floor = next(Version(s.version) for s in req.specifier if s.operator == ">=")
        pin = pins[_key(req)]
        assert req.specifier.contains(pin) and pin.release[:len(floor.release)] == floor.release, (req, pin)
    assert pins["torch"] < Version("2.5") and pins["torchvision"] < Version("0.20")


def test_check_dist_names_what_a_wheel_lacks(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import check_dist
    finally:
        sys.path.pop(0)
    with zipfile.ZipFile(tmp_path / "svformer_deploy-0.1.0-py3-none-any.whl", "w") as whl:
        whl.writestr("svformer_deploy/__init__.py", "")
        whl.writestr("svformer_deploy-0.1.0.dist-info/METADATA",
                     "Metadata-Version: 2.1\nName: svformer-deploy\nRequires-Python: >=3.11,<3.12\n"
                     "Requires-Dist: torch==2.14.1\n")
    import tarfile

    with tarfile.open(tmp_path / "svformer_deploy-0.1.0.tar.gz", "w:gz"):
        pass
    found = "\n".join(check_dist.problems(tmp_path))
    for missing in ("wheel lacks svformer_deploy/models/csrc/plif.cpp", "svformer_tiny_moving_digits.pt",
                    "pins 'torch==2.14.1'", "Requires-Python is '>=3.11,<3.12'", "no svformer-deploy console script",
                    "sdist lacks notebooks/sparsity_analysis.ipynb", "sdist lacks constraints.txt"):
        assert missing in found, missing


@pytest.mark.slow
def test_the_built_sdist_and_wheel_hold_the_package_and_the_project(tmp_path):
    """``python -m build`` (the sdist, then the wheel built from it) as tools/compat.sh builds them."""
    res = subprocess.run(["bash", str(ROOT / "tools" / "compat.sh"), "--dist-only", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "sdist and wheel built and checked" in res.stdout
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == ["svformer_deploy-0.1.0-py3-none-any.whl",
                                                                     "svformer_deploy-0.1.0.tar.gz"]
