#!/usr/bin/env bash
# The GPU check, run on a machine with CUDA and PyTorch (e.g. the lent device machine):
# the CUDA tests (tests/test_cuda.py), bench/bench_gpu.py, then the whole suite with CUDA present.
# Packages missing there (scikit-dimension, torch-cka, ckatorch, mnist1d) can come as wheels in .whl/.
set -u
OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -15 | tee "$OUT/tests_cuda.txt"
timeout "${BENCH_TIMEOUT:-420}" python3 bench/bench_gpu.py --out "$OUT" 2>&1 | grep -v "Comparing features" | tee "$OUT/bench.txt"
timeout "${SUITE_TIMEOUT:-150}" python3 -m pytest -q -x -p no:cacheprovider -n 8 tests 2>&1 | tail -15 | tee "$OUT/tests_all.txt"
