#!/usr/bin/env bash
# Every GPU check and benchmark in one run, for a lent GPU machine (no internet there).
# The wheels the machine lacks travel in .whl/ (see the README, "Speed"); figures go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/cli-link && ln -sfn "$PWD/cli" /tmp/cli-link/wsi_her2_cli
export PYTHONPATH="/tmp/site:$PWD:/tmp/cli-link"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/log.txt"
python3 -c "import torch, timm, os; print('torch', torch.__version__, 'timm', timm.__version__, 'cpus', os.cpu_count())" | tee -a "$OUT/log.txt"
run() { echo; echo "== $*" | tee -a "$OUT/log.txt"; timeout "${STEP_TIMEOUT:-200}" "$@" 2>&1 | tee -a "$OUT/log.txt"; }
run python3 benchmarks/bench_score.py --device cuda --workers 14 --repeat-grid 12 ${COMPILE:---compile} --seconds 5 --json "$OUT/score_gpu.json"
run python3 benchmarks/gpu_checks.py
run python3 benchmarks/bench_tiling.py --workers 14 --repeat 1
# ---- DAB scorer on the GPU (issue 12, item 2): torch path tiles/s against the numpy path per core, and agreement ----
run python3 benchmarks/bench_dab_gpu.py --device cuda --batch 32 64 128 --seconds 3 --json "$OUT/dab_gpu.json"
# ---- end of the DAB scorer on the GPU ----
echo "== done" | tee -a "$OUT/log.txt"
