#!/usr/bin/env bash
# Every CUDA path of svformer-deploy on a real GPU, once, in at most 8 minutes (issue 24), on a bare GPU machine:
# Python 3.12 with torch (CUDA) and Triton already there, no internet, this working tree and the carried wheels
# (.whl/, from benchmarks/gpu/fetch_wheels.sh) beside it.
#
#   benchmarks/gpu/check.sh OUTDIR [--dry-run] [--wheels DIR]
#
# Steps, each under its own time limit, each writing one file into OUTDIR (7 files in all, flat, small: the
# device tool brings back at most 8):
#   env.txt           Python, torch, CUDA, Triton, the card (nvidia-smi)
#   install.log       a venv over the machine's packages (--system-site-packages: its torch is kept), then
#                     `pip install --no-index --find-links WHEELS .`: the package's ranges must accept the machine's
#                     torch and every other dependency must be there or carried (else: --no-deps, and it says so)
#   cuda-tests.log    pytest -m cuda tests/cuda (Triton PLIF vs reference, model CUDA vs CPU, spike packing, AMP,
#                     counting, NIR/ONNX export of a CUDA model, train/evaluate --device cuda, torchrun + NCCL)
#   bench_model.log   svformer_ucf101, batch 8, T=16, 224x224: forward and forward+backward clips/s, ours vs the
#                     spikingjelly-PLIF variant in the same run, peak GPU memory of both, fused vs reference PLIF
#   bench_train.log   training steps (AdamW) of svformer_ucf101 batch 8, ours vs spikingjelly's PLIF, peak memory
#   summary.txt       what it printed at the end: one line per step (status, seconds) and the measured figures
#   timings.tsv       step, status, seconds, limit
#
# --dry-run (on a machine without a GPU, here): the same steps with the CPU parts only: the environment report,
# the carried wheels checked (each installs on CPython 3.12 x86_64, one version each, and with the image's
# packages they cover every dependency), the cuda tests collected (they skip), both benchmarks on shrunken inputs
# on the CPU; exit 0 when each step did what a dry run can.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT=""
DRY=0
WHEELS="$ROOT/.whl"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "check: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) OUT="$1"; shift ;;
  esac
done
[ -n "$OUT" ] || { echo "check: give the output folder: benchmarks/gpu/check.sh OUTDIR [--dry-run]" >&2; exit 2; }
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PIP_DISABLE_PIP_VERSION_CHECK=1
cd "$ROOT" || exit 2
: > "$OUT/timings.tsv"
FAILED=0
T_START=$(date +%s)

step() {  # step NAME LIMIT_S LOGFILE COMMAND...: run under `timeout`, record status and seconds
  local name="$1" limit="$2" log="$3"; shift 3
  local t0 rc status; t0=$(date +%s)
  timeout --kill-after=10 "$limit" bash -c '"$@"' step "$@" > "$OUT/$log" 2>&1
  rc=$?
  case $rc in 0) status=ok ;; 124|137) status="TIMEOUT (${limit} s)"; FAILED=1 ;; *) status="FAILED ($rc)"; FAILED=1 ;; esac
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - t0 ))" "$limit" >> "$OUT/timings.tsv"
  echo "check: $name: $status in $(( $(date +%s) - t0 )) s (limit $limit s; log $log)"
  return $rc
}

environment() {
  echo "date: $(date -u +%FT%TZ)  dry run: $DRY  commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
  "$PY" - <<'PY'
import platform, sys
print("python", platform.python_version(), sys.executable)
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"{p.total_memory / 2**30:.1f} GiB", f"{p.multi_processor_count} SMs", f"sm_{p.major}{p.minor}")
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    print("triton missing")
PY
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  [ "$DRY" -eq 1 ] || "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
}

install_gpu() {  # a venv over the machine's packages; ours from the tree, missing ones from the carried wheels
  local venv="${TMPDIR:-/tmp}/svformer-gpu-venv"
  rm -rf "$venv" && "$PY" -m venv --system-site-packages "$venv" || return 1
  if "$venv/bin/pip" install --no-index --find-links "$WHEELS" --no-build-isolation "$ROOT"; then
    echo "install: resolved against the machine's packages and the carried wheels"
  else
    echo "install: RESOLUTION FAILED (above: what is missing or out of range); installing with --no-deps instead"
    "$venv/bin/pip" install --no-index --no-deps "$WHEELS"/*.whl && \
      "$venv/bin/pip" install --no-index --no-deps --no-build-isolation "$ROOT" || return 1
    return 3
  fi
  "$venv/bin/pip" list 2>/dev/null | grep -iE "^(torch|torchvision|triton|numpy|onnx|onnxruntime|nir|snntorch|typer|svformer) "
}

install_dry() {  # here: the carried wheels must install on CPython 3.12 x86_64 and cover what the image lacks
  local plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
  ls "$WHEELS"/*.whl > /dev/null 2>&1 || { echo "no wheels in $WHEELS: run benchmarks/gpu/fetch_wheels.sh"; return 1; }
  "$PY" -m pip install --dry-run --no-index --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" --target "${TMPDIR:-/tmp}/svformer-gpu-dry" "$WHEELS"/*.whl || return 1
  "$PY" - "$ROOT" "$WHEELS" <<'PY'
import re, sys, tomllib
from pathlib import Path
from packaging.requirements import Requirement
root, wheels = Path(sys.argv[1]), Path(sys.argv[2])
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
image = {norm(w) for line in (root / "benchmarks/gpu/image-packages.txt").read_text().splitlines()
         if not line.startswith("#") for w in line.split()}
carried = [norm(p.name.split("-")[0]) for p in wheels.glob("*.whl")]
assert len(carried) == len(set(carried)), f"two versions of one package in {wheels}: {sorted(carried)}"
deps = [Requirement(r) for r in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]]
missing = [str(r) for r in deps if norm(r.name) not in image | set(carried)]
print(f"{len(carried)} carried wheels, {sum(p.stat().st_size for p in wheels.glob('*.whl')) / 2**20:.1f} MiB; "
      f"dependencies: {len(deps)}, missing from image and wheels: {missing or 'none'}")
sys.exit(1 if missing else 0)
PY
}

cuda_tests() {
  local py="$1"
  "$py" -m pytest -q -p no:cacheprovider -m cuda tests/cuda -rs
  local rc=$?
  [ "$DRY" -eq 1 ] && [ $rc -eq 0 ] && echo "dry run: collected, and skipped without a GPU"
  return $rc
}

summarize() {
{
  echo "svformer-deploy GPU check ($([ "$DRY" -eq 1 ] && echo "DRY RUN on the CPU" || echo "on the GPU")), $(( $(date +%s) - T_START )) s in all (budget 480 s)"
  grep -E "^(python|torch|device|triton) " "$OUT/env.txt"
  awk -F'\t' '{printf "  %-12s %-16s %4s s (limit %s s)\n", $1, $2, $3, $4}' "$OUT/timings.tsv"
  grep -E "^install:|carried wheels" "$OUT/install.log"
  grep -E "[0-9]+ (passed|failed|skipped)" "$OUT/cuda-tests.log" | tail -1
  grep -E "^(FAILED|ERROR) " "$OUT/cuda-tests.log"
  grep -E "clips/s|peak|neuron layers alone|ours / spikingjelly" "$OUT/bench_model.log" "$OUT/bench_train.log" \
    | sed "s|^$OUT/||"
} > "$OUT/summary.txt" 2>/dev/null
cat "$OUT/summary.txt"
}

export ROOT DRY WHEELS PY
export -f environment install_gpu install_dry cuda_tests
PYRUN="$PY"
step env "$([ "$DRY" -eq 1 ] && echo 90 || echo 40)" env.txt environment  # torch's import: ~2 s there, up to a minute on a loaded CPU machine
if [ "$DRY" -eq 1 ]; then
  step install 120 install.log install_dry || { summarize; exit 1; }  # nothing later would tell more
  step cuda-tests 120 cuda-tests.log cuda_tests "$PYRUN"
  step bench_model 240 bench_model.log "$PYRUN" benchmarks/bench_model.py --device cpu --models svformer_tiny \
    --batch 2 --repeats 1 --memory-model ''
  step bench_train 240 bench_train.log "$PYRUN" benchmarks/bench_train.py --device cpu --ucf-only --ucf-batch 2 \
    --ucf-steps 1 --ucf-set img_size=32 --ucf-set num_frames=2 --threads 2 --no-contention
else
  step install 60 install.log install_gpu || [ $? -eq 3 ] || { summarize; exit 1; }  # 3: fallback --no-deps installed
  [ -x "${TMPDIR:-/tmp}/svformer-gpu-venv/bin/python" ] && PYRUN="${TMPDIR:-/tmp}/svformer-gpu-venv/bin/python"
  step cuda-tests 200 cuda-tests.log cuda_tests "$PYRUN"
  step bench_model 120 bench_model.log "$PYRUN" benchmarks/bench_model.py --device cuda --models svformer_ucf101 \
    --batch 8 --repeats 3 --memory-model svformer_ucf101 --memory-batch 8
  step bench_train 60 bench_train.log "$PYRUN" benchmarks/bench_train.py --device cuda --ucf-only --ucf-batch 8 \
    --ucf-steps 5 --no-contention
fi

summarize
exit $FAILED
