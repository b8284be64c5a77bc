#!/usr/bin/env bash
# Download the wheels benchmarks/gpu/check.sh carries (benchmarks/gpu/wheels.txt) into .whl/ for CPython 3.12 on
# x86_64 Linux; norse publishes only an sdist, so its (pure-Python) wheel is built here. Then prints the size of
# what would travel (the tracked tree + .whl/, limit 64 MiB).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DEST="${WHEELS_DIR:-$ROOT/.whl}"
mkdir -p "$DEST"
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
grep -v '^#' "$ROOT/benchmarks/gpu/wheels.txt" | grep -v '^norse==' | grep . > "$DEST/.list"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" \
  -d "$DEST" -r "$DEST/.list"
python3 -m pip wheel -q --no-deps -w "$DEST" "$(grep '^norse==' "$ROOT/benchmarks/gpu/wheels.txt")"
rm -f "$DEST/.list"
tree=$(git -C "$ROOT" ls-files -z | (cd "$ROOT" && xargs -0 du -cb) | tail -1 | cut -f1)
whl=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
echo "fetch_wheels: $(ls "$DEST"/*.whl | wc -l) wheels, $((whl / 1048576)) MiB; tree $((tree / 1048576)) MiB; together $(((tree + whl) / 1048576)) MiB of 64"
