#!/usr/bin/env bash
# Prove the edges of svformer-deploy's Python and torch ranges: for each edge, a fresh venv on that Python gets the
# package from a wheel built here (`python -m build`: sdist, then the wheel built from the sdist), then, from a
# folder with no checkout in it, the core suite (pytest -m core: models, exporters, energy, chip), `svformer-deploy demo
# --pretrained` (which builds the Lava side environment, fresh, in this run's folder) and every other command on
# small inputs. The fused PLIF kernel is built fresh too (its own cache folder). Results: OUT/matrix.md (one row
# per edge: versions, pass/fail, times), OUT/<edge>/ (freeze, logs). docs/install.md records a run.
#
#   tools/compat.sh [--out DIR] [--keep] [EDGE ...]      EDGE: oldest (Python 3.10, torch 2.4, every direct
#                                                        dependency at its floor), newest (Python 3.13, torch 2.14.1)
#   tools/compat.sh --dist-only [--out DIR]              build and check the sdist and the wheel only
#   --core-only: install, fused kernel, --help and the core suite only (no demo, no commands: about half the time)
#   --reuse: where OUT/<edge>/venv exists (an earlier run with --keep), reinstall only the new wheel into it
#            (--no-deps --force-reinstall, then pip check) instead of building the venv again
#
# Interpreters: COMPAT_PYTHON_OLDEST / COMPAT_PYTHON_NEWEST (default: pyenv's 3.10.13 and 3.13.0). Needs the
# network (PyPI: torch's wheels, several GB per edge) and ~25 GB of disk; the venvs are removed afterwards unless
# --keep. Exit status: 0 when every step of every edge passed.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/build/compat"
KEEP=0
DIST_ONLY=0
REUSE=0
CORE_ONLY=0
EDGES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --dist-only) DIST_ONLY=1; shift ;;
    --reuse) REUSE=1; shift ;;
    --core-only) CORE_ONLY=1; shift ;;
    oldest|newest) EDGES+=("$1"); shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compat: unknown argument $1 (see tools/compat.sh --help)" >&2; exit 2 ;;
  esac
done
[ ${#EDGES[@]} -eq 0 ] && EDGES=(oldest newest)
PYENV="${PYENV_ROOT:-$HOME/.pyenv}/versions"
declare -A PYTHON=([oldest]="${COMPAT_PYTHON_OLDEST:-$PYENV/3.10.13/bin/python3.10}"
                   [newest]="${COMPAT_PYTHON_NEWEST:-$PYENV/3.13.0/bin/python3.13}")
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
FAILED=0

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
say() { echo "compat: $*"; }

# ---- the sdist and the wheel, and what they must hold ----
build_dist() {
  local t0; t0=$(now)
  rm -rf "$OUT/dist" && mkdir -p "$OUT/dist"
  if [ ! -x "$OUT/build-venv/bin/python" ]; then
    python3 -m venv "$OUT/build-venv" && "$OUT/build-venv/bin/pip" install -q "build>=1.2.1,<2" || return 1
  fi
  "$OUT/build-venv/bin/python" -m build --outdir "$OUT/dist" "$ROOT" > "$OUT/build.log" 2>&1 || {
    tail -20 "$OUT/build.log"; return 1; }
  "$OUT/build-venv/bin/python" "$ROOT/tools/check_dist.py" "$OUT/dist" || return 1
  say "sdist and wheel built and checked in $(since "$t0") s: $(cd "$OUT/dist" && ls | tr '\n' ' ')"
}

# ---- every command, on small inputs, from the current folder (no checkout in it) ----
commands() {
  local sd="$1" rates="$2" n=0 failed=0
  run() {
    n=$((n + 1))
    if "$@" > "cmd-$n.log" 2>&1; then echo "ok   $*"; else echo "FAIL $* (exit $?, see cmd-$n.log)"; failed=1; fi
  }
  run "$sd" --help
  for c in models info train evaluate finetune import-official export verify sparsity demo "energy report" "energy price"; do
    # shellcheck disable=SC2086
    run "$sd" $c --help
  done
  run "$sd" models
  run "$sd" info svformer_ucf101
  run "$sd" train --model svformer_tiny --data moving-digits --epochs 1 --train-clips 32 --batch-size 16 \
      --val-videos 16 --precise-bn-batches 0 --set img_size=32 --out runs/tiny
  run "$sd" evaluate runs/tiny/best.pt --data moving-digits --videos 16 --out runs/tiny
  run "$sd" export runs/tiny/best.pt --to onnx --out bundle-onnx --videos 4
  run "$sd" export runs/tiny/best.pt --to nir --out bundle-nir --videos 4
  run "$sd" verify bundle-nir --target nir-norse --videos 4
  run "$sd" energy report runs/tiny/best.pt --videos 4 --out energy
  run "$sd" energy price --model svformer_ucf101 --rates "$rates"
  run "$sd" sparsity runs/tiny/best.pt --videos 4 --out sparsity
  run "$sd" finetune runs/tiny/best.pt --bn keep --spike-budget 0.05 --epochs 1 --train-clips 32 --batch-size 16 \
      --videos 8 --out budgets
  return $failed
}

edge() {
  local name="$1" py="${PYTHON[$1]}" dir="$OUT/$1" cons="$ROOT/tools/compat/$1.txt" t0 rc
  local wheel; wheel=$(ls "$OUT"/dist/*.whl)
  local status=() times=()
  say "[$name] $("$py" --version 2>&1) at $py"
  t0=$(now)
  if [ $REUSE -eq 1 ] && [ -x "$dir/venv/bin/python" ]; then
    rm -rf "$dir/work" "$dir/ext" && mkdir -p "$dir/work"
    "$dir/venv/bin/python" -m pip install -q --no-deps --force-reinstall "$wheel" > "$dir/install.log" 2>&1 &&
      "$dir/venv/bin/python" -m pip check >> "$dir/install.log" 2>&1
    rc=$?; times+=("install (reused venv, new wheel) $(since "$t0") s")
  else
    rm -rf "$dir" && mkdir -p "$dir/work"
    "$py" -m venv "$dir/venv" && "$dir/venv/bin/pip" install -q -c "$cons" "$wheel[test]" > "$dir/install.log" 2>&1
    rc=$?; times+=("install $(since "$t0") s")
  fi
  if [ $rc -ne 0 ]; then
    grep -v "^WARNING: Location" "$dir/install.log" | tail -15
    echo "| $name | $("$py" --version 2>&1 | cut -d' ' -f2) | - | - | install FAILED | ${times[*]} |" >> "$OUT/matrix.md"
    return 1
  fi
  "$dir/venv/bin/python" -m pip freeze > "$dir/freeze.txt" 2>/dev/null
  local py_v torch_v tv_v
  py_v=$("$dir/venv/bin/python" -c "import platform; print(platform.python_version())")
  torch_v=$(grep -i "^torch==" "$dir/freeze.txt" | cut -d= -f3)
  tv_v=$(grep -i "^torchvision==" "$dir/freeze.txt" | cut -d= -f3)
  say "[$name] installed in ${times[0]#install }: Python $py_v, torch $torch_v, torchvision $tv_v"

  # a folder with no checkout: the tests (and the docs some of them read) copied in, the package from the venv
  mkdir -p "$dir/work/tests" && cp -r "$ROOT/docs" "$dir/work/" && (cd "$ROOT/tests" && cp -r __init__.py conftest.py helpers.py models exporters energy chip "$dir/work/tests/")
  find "$dir/work" -name __pycache__ -prune -exec rm -rf {} +
  printf '[pytest]\naddopts = -ra\nmarkers =\n    slow: slow\n    core: core suite\n    cuda: needs a GPU\nfilterwarnings =\n    ignore::DeprecationWarning\n' \
    > "$dir/work/pytest.ini"
  cd "$dir/work" || return 1
  export SVFORMER_EXT_DIR="$dir/ext" SVFORMER_LAVA_VENV="$OUT/lava-venv"
  local where; where=$("$dir/venv/bin/python" -c "import svformer_deploy, sys; print(svformer_deploy.__file__)")
  case "$where" in "$dir/venv/"*) ;; *) say "[$name] svformer_deploy imported from $where, not the venv"; return 1 ;; esac

  t0=$(now)
  if "$dir/venv/bin/python" -c "import warnings
from svformer_deploy.models import _plif_ext
warnings.simplefilter('error', RuntimeWarning)  # the fused kernel's build must not fall back (with a warning)
assert _plif_ext.fused_plif_available()" > "$dir/fused.log" 2>&1; then
    status+=("fused kernel built"); else status+=("fused kernel FAILED"); FAILED=1; cat "$dir/fused.log"; fi
  times+=("fused build $(since "$t0") s")

  local best=99 h
  for _ in 1 2 3; do
    t0=$(now); "$dir/venv/bin/svformer-deploy" --help > /dev/null; h=$(since "$t0")
    best=$(python3 -c "print(min($best, $h))")
  done
  times+=("--help $best s")

  t0=$(now)
  "$dir/venv/bin/python" -m pytest -q -p no:cacheprovider -m core tests > "$dir/core.log" 2>&1
  rc=$?; times+=("core suite $(since "$t0") s")
  local summary; summary=$(grep -E "[0-9]+ (passed|failed)" "$dir/core.log" | tail -1 | tr -d '=' | sed 's/^ *//')
  if [ $rc -eq 0 ]; then status+=("core: $summary"); else status+=("core FAILED: $summary"); FAILED=1
    grep -E "^(FAILED|ERROR)" "$dir/core.log" | head -20; fi

  if [ $CORE_ONLY -eq 1 ]; then
    status+=("demo and commands not run (--core-only)")
  else
    t0=$(now)
    "$dir/venv/bin/svformer-deploy" demo --pretrained --out demo-out > "$dir/demo.log" 2>&1
    rc=$?; times+=("demo --pretrained $(since "$t0") s")
    if [ $rc -eq 0 ] && [ -x "$OUT/lava-venv/bin/python" ]; then status+=("demo --pretrained ok (Lava side env built)")
    else status+=("demo --pretrained FAILED ($rc)"); FAILED=1; tail -15 "$dir/demo.log"; fi

    t0=$(now)
    commands "$dir/venv/bin/svformer-deploy" "$dir/work/tests/energy/data/svformer_ucf101_published_rates.csv" \
      > "$dir/commands.log" 2>&1
    rc=$?; times+=("commands $(since "$t0") s")
    if [ $rc -eq 0 ]; then status+=("every command ok"); else status+=("commands FAILED"); FAILED=1
      grep FAIL "$dir/commands.log"; fi
  fi
  cd "$ROOT" || return 1

  local line="| $name | $py_v | $torch_v | $tv_v | ${status[*]/%/;} | ${times[*]/%/;} |"
  echo "$line" >> "$OUT/matrix.md"
  say "[$name] $line"
  [ $KEEP -eq 1 ] || rm -rf "$dir/venv" "$dir/ext"
}

T0=$(now)
build_dist || { say "building or checking the sdist/wheel failed"; exit 1; }
[ $DIST_ONLY -eq 1 ] && exit 0
{ echo "compat run $(date -u +%F) on $(uname -m), $(nproc) CPUs, commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
  echo
  echo "| edge | Python | torch | torchvision | result | times |"
  echo "| --- | --- | --- | --- | --- | --- |"; } > "$OUT/matrix.md"
for e in "${EDGES[@]}"; do
  edge "$e" || FAILED=1
done
[ $KEEP -eq 1 ] || rm -rf "$OUT/lava-venv"
say "all edges in $(since "$T0") s; matrix in $OUT/matrix.md"
cat "$OUT/matrix.md"
exit $FAILED
