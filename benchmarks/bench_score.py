"""`score` speed with ConvNeXt-Tiny (random weights): each stage alone, then end to end, in one run.

Stages, each measured alone on the synthetic 40x slide of bench_tiling.py:
  loader  — decode + resize + pixel check in worker processes (no model);
  model   — the network on tiles already on the device (fp32, then bf16 + channels_last on CUDA,
            optionally torch.compile);
  e2e     — `score_slide` end to end (tissue, grid, loader, model, aggregation), counted after the
            model is warm (the same scorer scores the slide twice; the second run is reported).
The ratio e2e / model says how well I/O is hidden (1.0 = perfectly).

Usage:
  python benchmarks/bench_score.py                 # CPU here: a small part of the slide
  python benchmarks/bench_score.py --device cuda --repeat-grid 10 --workers 14 --compile
On CUDA, end to end is measured twice in the same run: tiles decoded on the GPU (--decode gpu)
and by the CPU workers (--decode cpu), each beside the model-only rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_tiling import make_slide


def model_only(card, model, device: str, batch: int, precision: str, compile_model: bool, seconds: float) -> float:
    import torch

    from wsi_her2.config import InferenceConfig
    from wsi_her2.inference import TorchEngine

    cfg = InferenceConfig(device=device, batch_size=batch, precision=precision, compile=compile_model)
    engine = TorchEngine(model, card, cfg, card.input_size_px)
    x = torch.randint(0, 255, (batch, 3, 224, 224), device=engine.device).float()
    if engine.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(3):  # warm (and compile)
        engine._forward(x)
    if engine.cuda:
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        engine._forward(x)
        n += batch
    if engine.cuda:
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def nvjpeg_probe(slide: Path, batch: int = 256, seconds: float = 5.0) -> float:
    """Batched GPU JPEG decode (nvJPEG through torchvision) of the 4x level's stored tiles: the way past CPU decode."""
    import os

    import tifffile
    import torch
    from torchvision.io import decode_jpeg

    page = tifffile.TiffFile(str(slide)).series[0].levels[1].keyframe
    fd = os.open(str(slide), os.O_RDONLY)
    order = np.argsort(np.asarray(page.databytecounts))[-batch:]  # the largest (tissue) tiles
    datas = [torch.frombuffer(bytearray(os.pread(fd, int(page.databytecounts[i]), int(page.dataoffsets[i]))), dtype=torch.uint8)
             for i in order]  # fmt: skip
    os.close(fd)
    decode_jpeg(datas, device="cuda")
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        decode_jpeg(datas, device="cuda")
        n += len(datas)
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def device_decode_rate(slide: Path, prepared, batch: int, seconds: float) -> float:
    """Tiles/s of the GPU decode path alone, over the benchmark grid, until ``seconds`` have passed."""
    import torch

    from wsi_her2.config import LoaderConfig
    from wsi_her2.slide import best_level
    from wsi_her2.tiling.gpu_decode import choose_decode, iter_device_tile_batches

    tile = prepared.grid.tile_size_px
    size = round(tile / best_level(prepared.info.levels, tile / 224).downsample)  # the stored size, as score reads
    cfg = LoaderConfig(output_size_px=size, batch_size=batch, decode="gpu")
    choice = choose_decode("gpu", torch.device("cuda"), prepared.info, tile, size)
    list(iter_device_tile_batches(choice, prepared.grid.subset(np.arange(batch * 2) % len(prepared.grid)), cfg))
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for b in iter_device_tile_batches(choice, prepared.grid, cfg, thresholds=prepared.mask.thresholds):
            n += len(b)
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tile-size", type=int, default=1024, help="level-0 px per tile (1024 reads the 4x level)")
    parser.add_argument("--max-tiles", type=int, default=96, help="tiles used on CPU (the slide has ~570 of 1024 px)")
    parser.add_argument("--repeat-grid", type=int, default=1, help="score the grid this many times over (GPU)")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--decode",
        choices=["cpu", "gpu"],
        nargs="+",
        default=None,
        help="tile decoding to measure end to end (default: gpu and cpu on CUDA, cpu elsewhere)",
    )
    parser.add_argument("--runs", type=int, default=3, help="measured end-to-end runs per decode mode")
    args = parser.parse_args()

    import torch

    from wsi_her2.config import GridConfig, InferenceConfig, LoaderConfig
    from wsi_her2.models.card import ModelCard
    from wsi_her2.models.loading import save_checkpoint
    from wsi_her2.models.registry import create_model
    from wsi_her2.pipeline import score_slide
    from wsi_her2.settings import ScoreSettings
    from wsi_her2.tiling import grid as grid_module

    cuda = args.device.startswith("cuda")
    batch = args.batch_size or (256 if cuda else 32)
    slide = make_slide()
    card = ModelCard(architecture="convnext_tiny", classes=("0", "1+", "2+", "3+"), stain="he", name="bench")
    torch.manual_seed(0)
    model = create_model("convnext_tiny", 4)
    figures: dict[str, float] = {}
    print(
        f"device {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if cuda else f", torch threads {torch.get_num_threads()}")
    )

    precisions = ["fp32", "bf16"] if cuda else ["fp32"]
    for precision in precisions:
        rate = model_only(card, model, args.device, batch, precision, False, args.seconds)
        figures[f"model_{precision}"] = rate
        print(
            f"model only, {precision}{' + channels_last' if cuda and precision != 'fp32' else ''}: {rate:,.0f} tiles/s"
        )
    if args.compile:
        rate = model_only(card, model, args.device, batch, "bf16" if cuda else "fp32", True, args.seconds)
        figures["model_compiled"] = rate
        print(f"model only, compiled: {rate:,.0f} tiles/s")

    best_model = max(v for k, v in figures.items() if k.startswith("model_"))
    decodes = args.decode or (["gpu", "cpu"] if cuda else ["cpu"])
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(model, card, Path(tmp) / "ckpt")
        from wsi_her2.models import load_scorer

        scorer = load_scorer(str(ckpt), inference=InferenceConfig(device=args.device, batch_size=batch,
                                                                  compile=args.compile))  # fmt: skip
        original = grid_module.build_tile_grid

        def bench_grid(*a, **k):  # a part of the slide on CPU; the grid repeated for long GPU runs
            grid = original(*a, **k)
            keep = np.arange(min(len(grid), args.max_tiles)) if not cuda else np.arange(len(grid))
            return grid.subset(np.tile(keep, args.repeat_grid))

        import wsi_her2.pipeline as pipeline_module

        pipeline_module.build_tile_grid = bench_grid
        result = None
        for decode in decodes:
            loader = LoaderConfig(workers=args.workers, prefetch_batches=4 if cuda else 2, decode=decode,
                                  min_parallel_work_s=0)  # fmt: skip
            settings = ScoreSettings(grid=GridConfig(tile_size_px=args.tile_size), loader=loader, check_stain=False,
                                     grid_user_set=frozenset({"tile_size_px"}))  # fmt: skip
            rates, waits = [], []
            try:
                score_slide(slide, scorer, settings)  # warm: model, compile, worker processes, decoder
                for _ in range(args.runs):
                    result = score_slide(slide, scorer, settings)
                    rates.append(result.timings_s["tiles_per_s"])
                    waits.append(result.timings_s["waiting_for_tiles_s"] / result.timings_s["tiles_and_model_s"])
            except Exception as exc:  # report and measure the other decoding
                print(f"end to end, --decode {decode}: FAILED: {type(exc).__name__}: {exc}")
                continue
            where = result.runtime.get("tile_decode", {})
            median = float(np.median(rates))
            figures[f"e2e_{decode}_decode"] = median
            figures[f"e2e_{decode}_decode_runs"] = rates  # type: ignore[assignment]
            print(f"end to end, --decode {decode} ({where.get('decode')}: {where.get('reason')}): "
                  f"{len(result.slide.grid):,} tiles of {args.tile_size} px, median {median:,.0f} tiles/s over "
                  f"{args.runs} runs ({min(rates):,.0f}-{max(rates):,.0f}); the model waited for tiles "
                  f"{np.median(waits):.0%} of the time; e2e / model-only {median / best_model:.2f}")  # fmt: skip
        if result is None:
            return
        figures["tiles"] = len(result.slide.grid)
        from wsi_her2.config import LoaderConfig as _L
        from wsi_her2.tiling.loader import SlideSource, iter_tile_batches

        loader_cfg = _L(workers=args.workers, output_size_px=scorer.output_size_px(result.slide), batch_size=batch,
                        min_parallel_work_s=0)  # fmt: skip
        t0 = time.perf_counter()
        count = sum(len(b) for b in iter_tile_batches(SlideSource(str(slide)), result.slide.grid, loader_cfg,
                                                        thresholds=result.slide.mask.thresholds))  # fmt: skip
        loader_rate = count / (time.perf_counter() - t0)
        figures["loader"] = loader_rate
        print(
            f"CPU loader alone ({args.workers} workers, {loader_cfg.output_size_px} px out): {loader_rate:,.0f} tiles/s"
        )
        scorer.close()
    if cuda and result is not None:
        try:
            figures["device_decode_path"] = device_decode_rate(slide, result.slide, batch, args.seconds)
            print(f"GPU decode path alone (read + nvJPEG + assemble + pixel check, batches of {batch}): "
                  f"{figures['device_decode_path']:,.0f} tiles/s")  # fmt: skip
        except Exception as exc:  # a probe only: report and go on
            print(f"GPU decode path probe failed: {type(exc).__name__}: {exc}")
    if cuda:
        try:
            figures["nvjpeg_decode"] = nvjpeg_probe(slide)
            print(
                f"GPU JPEG decode (nvJPEG, batches of 256 stored 256-px tiles): {figures['nvjpeg_decode']:,.0f} tiles/s"
            )
        except Exception as exc:  # a probe only: report and go on
            print(f"GPU JPEG decode probe failed: {type(exc).__name__}: {exc}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
