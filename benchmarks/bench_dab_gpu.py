"""The DAB scorer's torch path on a device against its numpy path on one CPU core: tiles/s and agreement, in one run.

A tile is 512 x 512 px at 0.5 µm/px (256 µm of tissue), as the scorer analyses it. Measured here:

* numpy: ``measure_tile`` on one thread (OpenCV and BLAS held to one thread, as a loader worker
  runs it), the fastest of ``--repeat`` passes; the N-core CPU rate is N x that (``--cpu-cores``,
  16 by default: the GPU machine's cores);
* torch: ``measure_tiles_torch`` on ``--device`` for each ``--batch`` size, warm, for ``--seconds``:
  once with the tiles already on the device ("compute") and once copied from pinned host memory each
  batch ("with copy"); results come back to the host either way, as the scorer needs them;
* the ratio torch / (N-core CPU rate), against the 20x target of issue 12 on an H100/H200;
* agreement: each image scored as a slide by both paths (``score_image``), the torch one on the
  device, with the tolerances the CPU tests hold (``tests/models/dab/agreement.py``).

Tiles: the two real HER2 cores (``--fixtures``, default ../shared/fixtures/ihc) when present,
else synthetic tiles (the tests' renderer); the source is printed.

Usage: python benchmarks/bench_dab_gpu.py [--device cuda|cpu] [--batch 64 128] [--seconds 5] [--json PATH]
       python benchmarks/bench_dab_gpu.py --device cpu --batch 4 --seconds 2     (a smoke run without GPU)
On ``--device cpu`` torch runs on one thread too, so that the ratio compares one core with one core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads its BLAS

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _pytest_stand_in() -> None:
    """The tests' renderers live in a conftest that imports pytest for its fixtures; a GPU machine may lack it."""
    import importlib.util
    import types

    if importlib.util.find_spec("pytest") is None:
        stand_in = types.ModuleType("pytest")
        stand_in.fixture = lambda *a, **k: a[0] if a and callable(a[0]) else (lambda f: f)  # type: ignore[attr-defined]
        stand_in.skip = lambda reason: sys.exit(f"skipped: {reason}")  # type: ignore[attr-defined]
        sys.modules["pytest"] = stand_in


_pytest_stand_in()

from tests.models.dab.agreement import compare_slides  # noqa: E402
from tests.models.dab.conftest import CellSpec, real_image, render_tile, render_tissue  # noqa: E402
from wsi_her2.models.dab import DabConfig, default_stain_vectors, optical_density  # noqa: E402
from wsi_her2.models.dab.slide_cells import score_image  # noqa: E402
from wsi_her2.models.dab.tile import measure_tile  # noqa: E402

TARGET_RATIO = 20.0
MPP = 0.5
TILE_PX = 512
CORES = (("score0", "her2-tma-core-score0.jpg"), ("score2plus", "her2-tma-core-score2plus.jpg"))


def images(fixtures: Path) -> tuple[str, float, list[tuple[str, np.ndarray, object]]]:
    """(source, least tissue fraction of a tile, [(name, image at 0.5 µm/px, stain vectors)])."""
    if all((fixtures / f).exists() for _, f in CORES):
        import tests.models.dab.conftest as conftest

        conftest.FIXTURES = fixtures.parent  # real_image reads FIXTURES / "ihc" / filename
        out = [(name, im.work, im.stains) for name, f in CORES for im in [real_image(name, f, 0.25)]]
        return f"real HER2 cores from {fixtures}", 0.5, out
    # Synthetic tiles are pale between the cells: every tile is measured.
    tissue = render_tissue(size_px=1024, membrane_od=0.3)[0]
    mixes = [[CellSpec(0.6, 1.0), CellSpec()], [CellSpec(0.2, 0.8), CellSpec(0.12, 0.4), CellSpec()],
             [CellSpec(nuclear_dab_od=0.8), CellSpec()], [CellSpec(0.25, 1.0, cytoplasm_dab_od=0.15)]]  # fmt: skip
    sheet = np.concatenate([render_tile(m, seed=i) for i, m in enumerate(mixes)], axis=1)
    stains = default_stain_vectors()
    return "synthetic tiles (real fixtures not found)", 0.0, [("tissue", tissue, stains), ("cells", sheet, stains)]


def tissue_tiles(rgb: np.ndarray, cfg: DabConfig, min_tissue: float) -> list[np.ndarray]:
    """Full 512-px tiles with at least ``min_tissue`` tissue (as the pipeline measures them)."""
    out = []
    for y in range(0, rgb.shape[0] - TILE_PX + 1, TILE_PX):
        for x in range(0, rgb.shape[1] - TILE_PX + 1, TILE_PX):
            tile = np.ascontiguousarray(rgb[y : y + TILE_PX, x : x + TILE_PX, :3])
            if (optical_density(tile).mean(axis=2) > cfg.tissue_min_od).mean() >= min_tissue:
                out.append(tile)
    return out


def numpy_rate(tiles: list[tuple[np.ndarray, object]], cfg: DabConfig, repeat: int) -> tuple[float, int]:
    """Tiles/s of measure_tile on one core (fastest pass) and cells per pass."""
    best, cells = float("inf"), 0
    measure_tile(tiles[0][0], tiles[0][1], cfg, MPP)  # warm up
    for _ in range(repeat):
        start = time.perf_counter()
        cells = sum(int(measure_tile(t, s, cfg, MPP)["n_cells"]) for t, s in tiles)
        best = min(best, time.perf_counter() - start)
    return len(tiles) / best, cells


def torch_rate(
    torch, tiles: np.ndarray, stains: object, cfg: DabConfig, device: str, seconds: float, copy: bool
) -> float:
    """Tiles/s of measure_tiles_torch on ``device`` over repeated batches (warm)."""
    from wsi_her2.models.dab.torch_measure import measure_tiles_torch

    host = torch.from_numpy(tiles)
    if device.startswith("cuda"):
        host = host.pin_memory()
    on_device = host.to(device)

    def once() -> None:
        batch = host.to(device, non_blocking=True) if copy else on_device
        measure_tiles_torch(batch, stains, cfg, MPP)  # returns host arrays: synchronises

    once()
    once()
    n, start = 0, time.perf_counter()
    while True:
        once()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 2:
            return n * len(tiles) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="torch device for the torch path (cuda, cuda:1, cpu)")
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 64, 128], help="tiles per torch call")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per torch measurement")
    parser.add_argument("--repeat", type=int, default=3, help="passes of the numpy path (fastest kept)")
    parser.add_argument("--cpu-cores", type=int, default=16, help="cores of the CPU rate the GPU is compared with")
    parser.add_argument("--fixtures", type=Path, default=ROOT / ".." / "shared" / "fixtures" / "ihc")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import torch

    from wsi_her2.models.dab.torch_measure import measure_tile_list

    cv2.setNumThreads(1)
    if args.device == "cpu":
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        print(f"no CUDA device: run with --device cpu for a smoke run (asked for {args.device})")
        sys.exit(2)
    cfg = DabConfig()
    gpu = torch.cuda.get_device_name(args.device) if args.device != "cpu" else "none"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; GPU: {gpu}")
    print(
        f"Python {platform.python_version()}, torch {torch.__version__}, OpenCV {cv2.__version__}, numpy {np.__version__}"
    )
    source, min_tissue, imgs = images(args.fixtures)
    tiles = [(t, stains) for _, rgb, stains in imgs for t in tissue_tiles(rgb, cfg, min_tissue)]
    print(f"tiles: {len(tiles)} of {TILE_PX} px at {MPP} µm/px, {source}")

    per_core, cells = numpy_rate(tiles, cfg, args.repeat)
    cpu_rate = args.cpu_cores * per_core
    print(f"numpy measure_tile, 1 thread: {per_core:8.1f} tiles/s/core ({cells / len(tiles):.0f} cells/tile); "
          f"x{args.cpu_cores} cores = {cpu_rate:8.1f} tiles/s")  # fmt: skip
    figures: dict = {"device": args.device, "gpu": gpu, "source": source, "numpy_tiles_per_s_per_core": per_core,
                     "cpu_cores": args.cpu_cores, "cpu_tiles_per_s": cpu_rate, "torch": []}  # fmt: skip
    stains = tiles[0][1]
    best = 0.0
    for size in args.batch:
        batch = np.stack([tiles[i % len(tiles)][0] for i in range(size)])
        if args.device != "cpu":
            torch.cuda.reset_peak_memory_stats(args.device)
        compute = torch_rate(torch, batch, stains, cfg, args.device, args.seconds, copy=False)
        with_copy = torch_rate(torch, batch, stains, cfg, args.device, args.seconds, copy=True)
        peak = torch.cuda.max_memory_allocated(args.device) / size / 2**20 if args.device != "cpu" else None
        best = max(best, with_copy)
        peak_text = f"{peak:.0f} MiB/tile" if peak is not None else "n/a on CPU"
        print(f"torch on {args.device}, batch {size:4d}: {compute:9.1f} tiles/s compute, {with_copy:9.1f} with copy; "
              f"x{compute / cpu_rate:6.2f} / x{with_copy / cpu_rate:6.2f} of the {args.cpu_cores}-core CPU rate; "
              f"peak memory {peak_text}")  # fmt: skip
        figures["torch"].append({"batch": size, "compute_tiles_per_s": compute, "with_copy_tiles_per_s": with_copy,
                                 "peak_mib_per_tile": peak})  # fmt: skip
    ratio = best / cpu_rate
    verdict = "reached" if ratio >= TARGET_RATIO else "NOT reached"
    if args.device == "cpu":
        verdict = "not applicable (CPU smoke run)"
    print(
        f"ratio (best batch, with copy) / {args.cpu_cores}-core CPU rate: x{ratio:.2f}; target x{TARGET_RATIO:.0f}: {verdict}"
    )
    figures.update(ratio=ratio, target_ratio=TARGET_RATIO, agreement={})

    measure = partial(measure_tile_list, device=args.device)
    for name, rgb, st in imgs:
        kw = {"mpp": MPP, "min_tissue_fraction": min_tissue}
        agreement = compare_slides(
            score_image(rgb, st, cfg, **kw), score_image(rgb, st, cfg, measure_tiles=measure, **kw), cfg
        )
        failures = agreement.failures()
        print(
            f"agreement on {args.device}, {name}: {agreement.line()}; "
            + ("within tolerance" if not failures else "OUTSIDE: " + "; ".join(failures))
        )
        figures["agreement"][name] = {"line": agreement.line(), "failures": failures}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
