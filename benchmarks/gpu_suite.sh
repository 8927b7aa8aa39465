#!/usr/bin/env bash
# Every GPU check and benchmark in one run, for a lent GPU machine (no internet there).
# The wheels the machine lacks travel in .whl/ (see docs/benchmarks.md); figures go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/cli-link && ln -sfn "$PWD/cli" /tmp/cli-link/wsi_her2_cli
export PYTHONPATH="/tmp/site:$PWD:/tmp/cli-link"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cpus', __import__('os').cpu_count())"
run() { echo; echo "== $*"; timeout "${STEP_TIMEOUT:-240}" "$@" 2>&1 | tee -a "$OUT/log.txt"; }
run python3 benchmarks/bench_tiling.py --workers 1 2 8 14 --repeat 1
run python3 benchmarks/gpu_checks.py
run python3 benchmarks/bench_score.py --device cuda --workers 14 --repeat-grid 12 --compile --seconds 6 --json "$OUT/score_gpu.json"
if [ -f benchmarks/bench_train.py ]; then run python3 benchmarks/bench_train.py --device cuda; fi
echo "== done"
