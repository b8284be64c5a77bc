"""Check a built sdist and wheel (``python tools/check_dist.py DIST``): the wheel holds every file of the package
the checkout tracks (the C++ source of the fused PLIF kernel, the shipped checkpoints -- the demo's and the
notebook's data --, the Lava runner), its metadata asks for ranges only; the sdist holds every tracked file of
the project (notebook, tests and their data, docs, tools). Exit 1 naming what is missing."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIRED_IN_WHEEL = ["svformer_deploy/models/csrc/plif.cpp", "svformer_deploy/assets/svformer_tiny_moving_digits.pt",
                     "svformer_deploy/assets/svformer_tiny_moving_digits_per_timestep_bn.pt",
                     "svformer_deploy/exporters/lava/runner.py", "svformer_deploy/py.typed"]
REQUIRED_IN_SDIST = ["notebooks/sparsity_analysis.ipynb", "constraints.txt", "tools/compat.sh",
                     "tests/energy/data/svformer_ucf101_published_rates.csv"]


def tracked() -> list[str]:
    """The files git tracks in the checkout (the sdist's and the wheel's reference)."""
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True).stdout
    return [p for p in out.splitlines() if p and p != ".gitignore" and (ROOT / p).is_file()]


def problems(dist: Path) -> list[str]:
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        return [f"expected one wheel and one sdist in {dist}, found {[p.name for p in wheels + sdists]}"]
    files = tracked()
    found = []
    with zipfile.ZipFile(wheels[0]) as whl:
        names = set(whl.namelist())
        want = sorted({p for p in files if p.startswith("svformer_deploy/")} | set(REQUIRED_IN_WHEEL))
        found += [f"wheel lacks {p}" for p in want if p not in names]
        found += [f"wheel holds {p}, which is not the package's" for p in names
                  if not p.startswith(("svformer_deploy/", "svformer_deploy-"))]
        meta = Parser().parsestr(whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
        found += [f"wheel metadata pins {r!r}: ranges only (exact versions go in constraints.txt)"
                  for r in meta.get_all("Requires-Dist") or [] if "==" in r.split(";")[0]]
        if meta["Requires-Python"] != "<3.14,>=3.10":
            found.append(f"wheel metadata Requires-Python is {meta['Requires-Python']!r}, not '>=3.10,<3.14'")
        entry = next((n for n in names if n.endswith(".dist-info/entry_points.txt")), None)
        if entry is None or "svformer-deploy = svformer_deploy.cli:main" not in whl.read(entry).decode():
            found.append("wheel has no svformer-deploy console script")
    with tarfile.open(sdists[0]) as sdist:
        top = sdists[0].name[: -len(".tar.gz")]
        names = {m.name.removeprefix(top + "/") for m in sdist.getmembers() if m.isfile()}
        found += [f"sdist lacks {p}" for p in sorted(set(files) | set(REQUIRED_IN_SDIST)) if p not in names]
    return found


def main() -> int:
    found = problems(Path(sys.argv[1]))
    for p in found:
        print(f"check_dist: {p}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
