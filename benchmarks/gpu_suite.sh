#!/usr/bin/env bash
# Every GPU check and benchmark in one run, for a lent GPU machine (H100/H200, 16 cores, Python 3.12,
# torch + torchvision + timm preinstalled, no internet). Budget: under 8 minutes (each step has its
# own time limit, 455 s together; figures are printed as they are measured, so a step cut short
# still reports, and a failing step does not stop the next).
#
# Before: here, `bash benchmarks/gpu_wheels.sh` fills .whl/ (wheels the machine lacks) and
# .gpu-data/ (two real slides, the two real HER2 cores). Then, with the device tool:
#   run(command="bash benchmarks/gpu_suite.sh", carry=[".whl", ".gpu-data"], timeout_s=540)
# The log and the figures (JSON) land in $OUT. `bash benchmarks/gpu_suite.sh --dry-run-cpu` runs
# every step here on the CPU (tiny settings), to check the script before a GPU session spends on it.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
log="$OUT/log.txt"
if [ "${1:-}" = "--dry-run-cpu" ]; then
  dry=1; : >"$log"
  export PYTHONPATH="$PWD:${PYTHONPATH:-}"
else
  dry=0
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$log"
fi
python3 -c "import torch, torchvision, timm, os; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__, 'cpus', os.cpu_count())" | tee -a "$log"
run() {
  local limit=$1; shift
  echo | tee -a "$log"; echo "== $* (limit ${limit}s)" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | grep -v "DeprecationWarning\|warnings.warn" | tee -a "$log"
}
if [ "$dry" = 1 ]; then
  run 600 python3 benchmarks/gpu_checks.py --dry-run-cpu
  run 600 python3 benchmarks/bench_score.py --device cpu --workers 2 --max-tiles 32 --seconds 1 --runs 1 \
    --json "$OUT/score_gpu.json"
  run 600 python3 benchmarks/bench_dab_gpu.py --device cpu --batch 4 --seconds 1 --repeat 1 --fixtures .gpu-data/ihc \
    --json "$OUT/dab_gpu.json"
  echo "== done (CPU dry run)" | tee -a "$log"
  exit 0
fi
# 1. Correctness first (it also writes the benchmark slide): GPU-decoded pixels and kept tiles vs
#    the CPU loader on four slides; CPU vs CUDA scores with GPU and with CPU decoding, for
#    ConvNeXt-Tiny and for the DAB scorer (a real HER2 core and a synthetic IHC slide), with the
#    DAB scorer's end-to-end tiles/s per mode.
run 130 python3 benchmarks/gpu_checks.py
# 2. Speed: ConvNeXt-Tiny alone (fp32, bf16, compiled), then end to end with GPU decoding and with
#    CPU decoding (14 workers), each beside the model-alone rate; the GPU decode path alone; nvJPEG alone.
run 200 python3 benchmarks/bench_score.py --device cuda --workers 14 --repeat-grid 12 --compile --seconds 3 \
  --runs 3 --json "$OUT/score_gpu.json"
# 3. The DAB scorer's batched torch measurement against its numpy path per core (x16: the 16-core
#    rate; target x20), and agreement with it on the two real cores.
run 75 python3 benchmarks/bench_dab_gpu.py --device cuda --batch 32 64 128 --seconds 3 --fixtures .gpu-data/ihc \
  --json "$OUT/dab_gpu.json"
# 4. The CPU loader on 16 cores against raw libjpeg-turbo decode.
run 50 python3 benchmarks/bench_tiling.py --workers 14 --repeat 1
echo "== done" | tee -a "$log"
