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

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(model, card, Path(tmp) / "ckpt")
        settings = ScoreSettings(
            model=str(ckpt),
            grid=GridConfig(tile_size_px=args.tile_size),
            grid_user_set=frozenset({"tile_size_px"}),
            loader=LoaderConfig(workers=args.workers, prefetch_batches=4 if cuda else 2),
            inference=InferenceConfig(device=args.device, batch_size=batch, compile=args.compile),
            check_stain=False,
        )
        from wsi_her2.models import load_scorer

        scorer = load_scorer(settings.model, inference=settings.inference)
        original = grid_module.build_tile_grid

        def bench_grid(*a, **k):  # a part of the slide on CPU; the grid repeated for long GPU runs
            grid = original(*a, **k)
            keep = np.arange(min(len(grid), args.max_tiles)) if not cuda else np.arange(len(grid))
            return grid.subset(np.tile(keep, args.repeat_grid))

        import wsi_her2.pipeline as pipeline_module

        pipeline_module.build_tile_grid = bench_grid
        score_slide(slide, scorer, settings)  # warm: model, compile, worker processes
        result = score_slide(slide, scorer, settings)
        timings = result.timings_s
        n = len(result.slide.grid)
        e2e = timings["tiles_per_s"]
        figures.update({"e2e": e2e, "tiles": n, "waiting_for_tiles_s": timings["waiting_for_tiles_s"],
                        "tiles_and_model_s": timings["tiles_and_model_s"]})  # fmt: skip
        print(f"end to end: {n:,} tiles of {args.tile_size} px in {timings['tiles_and_model_s']:.2f} s = {e2e:,.0f} tiles/s; "
              f"the model waited {timings['waiting_for_tiles_s']:.2f} s for tiles")  # fmt: skip
        best_model = max(v for k, v in figures.items() if k.startswith("model_"))
        print(f"ratio e2e / model-only: {e2e / best_model:.2f}")
        from wsi_her2.config import LoaderConfig as _L
        from wsi_her2.tiling.loader import SlideSource, iter_tile_batches

        loader_cfg = _L(workers=args.workers, output_size_px=scorer.output_size_px(result.slide), batch_size=batch)
        t0 = time.perf_counter()
        count = sum(len(b) for b in iter_tile_batches(SlideSource(str(slide)), result.slide.grid, loader_cfg,
                                                        thresholds=result.slide.mask.thresholds))  # fmt: skip
        loader_rate = count / (time.perf_counter() - t0)
        figures["loader"] = loader_rate
        print(f"loader only ({args.workers} workers, {loader_cfg.output_size_px} px out): {loader_rate:,.0f} tiles/s")
        scorer.close()
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
