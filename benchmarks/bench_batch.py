"""Slides per hour of `wsi-her2 batch` with the default model (DAB) on synthetic 40x HER2 IHC slides.

Writes N synthetic Aperio-style slides (default 5 of 20000 x 15000 px at 0.25 µm/px, ~40 % tissue,
HER2-IHC-like texture) once, then runs the real command line (a fresh process per run, as a user
would) with each --jobs value into a fresh output folder and reports wall time, slides/hour and the
ratio to the first configuration. Loader workers per slide are the command's default (the cores
divided by --jobs) unless a configuration gives them ("2:0" = 2 jobs, --workers 0).

Usage: python benchmarks/bench_batch.py [--slides 5] [--size 20000x15000] [--configs 1,2]
                                        [--keep DIR] [--repeat 1] [--model dab|CHECKPOINT] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_slides(folder: Path, count: int, width: int, height: int) -> list[Path]:
    from wsi_her2.synthetic import write_synthetic_slide

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"synthetic-ihc-{i:02d}.svs"
        if not path.exists():
            t0 = time.perf_counter()
            write_synthetic_slide(path, width=width, height=height, mpp=0.25, stain="ihc", seed=100 + i)
            print(f"  wrote {path.name} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s")
        paths.append(path)
    return paths


def run_batch_cli(slides: Path, out: Path, jobs: int, workers: int | None, extra: list[str]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "wsi_her2_cli.main", "batch", str(slides), "-o", str(out), "-q"]
    command += ["--jobs", str(jobs), *extra]
    if workers is not None:
        command += ["--workers", str(workers)]
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"batch failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def parse_config(text: str) -> tuple[int, int | None]:
    jobs, _, workers = text.partition(":")
    return int(jobs), (int(workers) if workers else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=5)
    parser.add_argument("--size", default="20000x15000", help="level-0 width x height in pixels")
    parser.add_argument("--configs", default="1,2", help="comma-separated JOBS[:WORKERS] (default loader workers)")
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep the synthetic slides in")
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration (the fastest is reported)")
    parser.add_argument("--model", default="dab", help="'dab' or a checkpoint (e.g. for a GPU run)")
    parser.add_argument("--device", default="auto", help="device of a trained model (auto, cpu, cuda)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    configs = [parse_config(c) for c in args.configs.split(",")]

    cores = os.cpu_count() or 1
    print(f"machine: {cpu_model()}, {cores} cores, Python {platform.python_version()}, {platform.system()}")
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    slides_dir = args.keep or work / "slides"
    print(f"slides: {args.slides} synthetic 40x HER2 IHC, {width} x {height} px, in {slides_dir}; model {args.model}")
    make_slides(slides_dir, args.slides, width, height)
    results = []
    try:
        for jobs, workers in configs:
            extra = ["--model", args.model, "--device", args.device]
            best = min(run_batch_cli(slides_dir, work / "out", jobs, workers, extra) for _ in range(args.repeat))
            per_slide_workers = workers if workers is not None else max(1, min(16, cores // jobs))
            rate = args.slides / best * 3600
            results.append((jobs, per_slide_workers, best, rate))
            print(
                f"  --jobs {jobs} ({per_slide_workers} loader workers per slide): {best:6.1f} s, {rate:7.0f} slides/hour"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = results[0][3]
    print("\nconfiguration                         seconds  slides/hour  ratio")
    for jobs, per_slide, seconds, rate in results:
        label = f"--jobs {jobs}, {per_slide} loader worker(s)/slide"
        print(f"{label:36s} {seconds:8.1f} {rate:12.0f} {rate / base:6.2f}")


if __name__ == "__main__":
    main()
