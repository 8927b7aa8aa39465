"""Cold start: the whole `wsi-her2 tile` command, default workers vs `--workers 0`, in one run.

Each run is a fresh process (interpreter start, imports, slide open, tissue, grid, tiles, outputs)
on the synthetic 40x slide of bench_tiling.py; the two settings alternate, so a burst of load
from elsewhere hits both. The default must never be slower than reading in one process: a slide
this small is read in-process, and worker processes start only when the rest of the slide would
take longer than `LoaderConfig.min_parallel_work_s`.

Usage: python benchmarks/bench_cold_start.py [--runs 5] [--slide PATH]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_tiling import make_slide


def run_tile(slide: Path, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "wsi_her2_cli.main", "tile", str(slide), "-o", out, "-q", *extra]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--slide", type=Path, default=None)
    args = parser.parse_args()
    slide = args.slide or make_slide()
    settings = {"default": [], "--workers 0": ["--workers", "0"]}
    times: dict[str, list[float]] = {name: [] for name in settings}
    run_tile(slide, [])  # page cache and byte-code caches warm for both
    for _ in range(args.runs):
        for name, extra in settings.items():
            times[name].append(run_tile(slide, extra))
    print(f"`wsi-her2 tile` on {slide.name}, {args.runs} runs each, alternating (process start included):")
    for name, values in times.items():
        print(
            f"  {name:>12}: median {statistics.median(values):.2f} s  (runs: {', '.join(f'{v:.2f}' for v in values)})"
        )
    ratio = statistics.median(times["default"]) / statistics.median(times["--workers 0"])
    paired = [a / b for a, b in zip(times["default"], times["--workers 0"], strict=True)]
    print(f"  default / --workers 0: {ratio:.2f} (medians); per pair {min(paired):.2f}-{max(paired):.2f}")


if __name__ == "__main__":
    main()
