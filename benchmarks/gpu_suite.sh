#!/usr/bin/env bash
# Every GPU check and benchmark in one run, for a lent GPU machine (H100/H200, 16 cores, Python 3.12,
# torch + torchvision + timm preinstalled, no internet). Budget: under 8 minutes (each step has its
# own time limit; figures are printed as they are measured, so a step cut short still reports).
#
# Before: here, `bash benchmarks/gpu_wheels.sh` fills .whl/ (wheels the machine lacks) and
# .gpu-data/ (two real slides). Then, with the device tool:
#   run(command="bash benchmarks/gpu_suite.sh", carry=[".whl", ".gpu-data"], timeout_s=560)
# The log and the figures (JSON) land in $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD"
log="$OUT/log.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$log"
python3 -c "import torch, torchvision, timm, os; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__, 'cpus', os.cpu_count())" | tee -a "$log"
run() {
  local limit=$1; shift
  echo | tee -a "$log"; echo "== $* (limit ${limit}s)" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | grep -v "DeprecationWarning\|warnings.warn" | tee -a "$log"
}
# 1. Correctness first (it also writes the benchmark slide): GPU-decoded pixels and kept tiles vs
#    the CPU loader on four slides; CPU vs CUDA scores with GPU and with CPU decoding.
run 130 python3 benchmarks/gpu_checks.py
# 2. Speed: ConvNeXt-Tiny alone (fp32, bf16, compiled), then end to end with GPU decoding and with
#    CPU decoding (14 workers), each beside the model-alone rate; the GPU decode path alone; nvJPEG alone.
run 270 python3 benchmarks/bench_score.py --device cuda --workers 14 --repeat-grid 12 --compile --seconds 3 \
  --runs 3 --json "$OUT/score_gpu.json"
# 3. The CPU loader on 16 cores against raw libjpeg-turbo decode.
run 90 python3 benchmarks/bench_tiling.py --workers 14 --repeat 2
echo "== done" | tee -a "$log"
