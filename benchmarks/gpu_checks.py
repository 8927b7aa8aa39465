"""GPU correctness: the CUDA paths agree with the CPU, pixel by pixel and score by score.

1. Tiles decoded on the GPU (nvJPEG through torchvision, assembled, resized and checked there)
   against the CPU loader (libjpeg-turbo, OpenCV), on the benchmark slide (YCbCr 4:2:0 JFIF
   tiles), a synthetic RGB-coded slide (Aperio's older coding, 4:4:4) and, when present in
   .gpu-data/ (benchmarks/gpu_wheels.sh copies them), real Aperio (shared JPEG tables, RGB-coded)
   and OME-TIFF slides: pixel differences, kept tiles, blur scores.
2. The same slide scored with the same random ConvNeXt-Tiny on CPU (fp32) and CUDA (bf16), with
   GPU decoding and with CPU decoding: per-tile probabilities and the slide score.
3. The DAB scorer on the CPU workers (OpenCV) and on CUDA (batched torch), with GPU decoding and
   with CPU decoding, on the real HER2 2+ core stored as a tiled JPEG SVS (.gpu-data/ihc/) and a
   synthetic IHC slide: slide score, tumour-class fractions, membrane index, and each mode's
   end-to-end tiles/s.
Run on a machine with a GPU; prints "GPU CHECK PASSED" or "GPU CHECK FAILED" and why.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_tiling import make_slide

DATA = Path(__file__).resolve().parents[1] / ".gpu-data"


def compare_pixels(path: Path, tile_size: int, output: int, mpp: float | None = None, device: str = "cuda") -> bool:
    """GPU decode path vs CPU loader on every tissue tile of one slide; True when they agree."""
    import torch

    from wsi_her2.config import GridConfig, LoaderConfig
    from wsi_her2.slide import open_slide
    from wsi_her2.tiling.gpu_decode import choose_decode, iter_device_tile_batches
    from wsi_her2.tiling.grid import build_tile_grid
    from wsi_her2.tiling.loader import SlideSource, iter_tile_batches
    from wsi_her2.tissue import detect_tissue

    with open_slide(path, mpp=mpp) as reader:
        mask = detect_tissue(reader)
        grid = build_tile_grid(mask, reader.info, GridConfig(tile_size_px=tile_size))
        try:
            choice = choose_decode("gpu", torch.device(device), reader.info, tile_size, output)
        except Exception as exc:
            print(f"{path.name}: not decoded on the GPU: {exc}")
            return False
    cfg = LoaderConfig(workers=8, output_size_px=output, batch_size=128, min_parallel_work_s=0)
    diffs, kept_cpu, kept_gpu, blur_cpu, blur_gpu = [], [], [], [], []
    cpu_batches = iter_tile_batches(SlideSource(str(path), mpp), grid, cfg, thresholds=mask.thresholds)
    gpu_batches = iter_device_tile_batches(choice, grid, cfg, thresholds=mask.thresholds)
    for a, b in zip(cpu_batches, gpu_batches, strict=True):
        diffs.append(np.abs(a.images.astype(np.int16) - b.device_images.cpu().numpy()))
        kept_cpu.append(a.kept.copy())
        kept_gpu.append(b.kept)
        blur_cpu.append(a.blur_score.copy())
        blur_gpu.append(b.blur_score)
    d = np.concatenate(diffs)
    kc, kg = np.concatenate(kept_cpu), np.concatenate(kept_gpu)
    bc, bg = np.concatenate(blur_cpu), np.concatenate(blur_gpu)
    agree = float((kc == kg).mean())
    rel = float(np.median(np.abs(bc - bg) / np.maximum(bc, 1.0)))
    ok = d.mean() < 2.0 and agree >= 0.99
    print(f"{path.name} ({len(grid)} tiles {tile_size} px -> {output} px, {choice.reason}): |GPU - CPU| pixels "
          f"mean {d.mean():.3f}, max {d.max()}, >2 grey levels {np.mean(d > 2):.2%}; kept tiles agree "
          f"{agree:.2%} ({kc.sum()} CPU / {kg.sum()} GPU); blur score median relative difference {rel:.3f} "
          f"-> {'ok' if ok else 'DIFFERENT'}")  # fmt: skip
    return ok


def compare_scores(slide: Path, device: str = "cuda", arch: str = "convnext_tiny") -> bool:
    import torch

    from wsi_her2.config import GridConfig, InferenceConfig, LoaderConfig
    from wsi_her2.models import load_scorer
    from wsi_her2.models.card import ModelCard
    from wsi_her2.models.loading import save_checkpoint
    from wsi_her2.models.registry import create_model
    from wsi_her2.pipeline import score_slide
    from wsi_her2.settings import ScoreSettings

    torch.manual_seed(0)
    card = ModelCard(architecture=arch, classes=("0", "1+", "2+", "3+"), stain="he", name="check")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(create_model(arch, 4), card, Path(tmp) / "ckpt")
        for name, on, decode in (("cpu", "cpu", "cpu"), ("cuda+gpu-decode", device, "gpu"),
                                 ("cuda+cpu-decode", device, "cpu")):  # fmt: skip
            scorer = load_scorer(str(ckpt), inference=InferenceConfig(device=on, batch_size=64))
            try:
                settings = ScoreSettings(grid=GridConfig(tile_size_px=1024), grid_user_set=frozenset({"tile_size_px"}),
                                         loader=LoaderConfig(workers=8, decode=decode), check_stain=False)  # fmt: skip
                results[name] = score_slide(slide, scorer, settings)
                print(name, scorer.runtime())
            except Exception as exc:
                print(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            scorer.close()
    cpu = results["cpu"]
    ok = True
    for name in ("cuda+gpu-decode", "cuda+cpu-decode"):
        if name not in results:
            ok = False
            continue
        gpu = results[name]
        both = cpu.predictions.scored & gpu.predictions.scored
        a, b = cpu.predictions.probabilities[both], gpu.predictions.probabilities[both]
        diff = np.abs(a - b)
        # Random weights give near-uniform probabilities, where bf16 rounding flips ties: judge the
        # class agreement on tiles whose top two CPU probabilities differ by at least 0.02.
        top2 = np.sort(a, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) >= 0.02
        agree = (a[clear].argmax(1) == b[clear].argmax(1)).mean() if clear.any() else 1.0
        same_tiles = np.array_equal(cpu.predictions.scored, gpu.predictions.scored)
        print(f"{name}: tiles {both.sum()} (same scored tiles: {same_tiles}); max |p_cpu - p_cuda| = "
              f"{diff.max():.4f}, mean {diff.mean():.5f}; class agreement {agree:.1%} on {clear.sum()} tiles "
              f"without near-ties; slide score cpu {cpu.score.score} / cuda {gpu.score.score}; "
              f"decode {gpu.runtime.get('tile_decode')}")  # fmt: skip
        ok &= bool(diff.max() < 0.05 and agree > 0.97 and cpu.score.score == gpu.score.score)
    return ok


def _dab_scorer(device: str):
    from wsi_her2.models.dab.scorer import DabScorer

    if device == "cuda":
        return DabScorer(device="cuda")
    scorer = DabScorer()
    if device == "cpu-tensors":  # the CUDA code path on CPU tensors (dry run)
        scorer.torch_device = "cpu"
    return scorer


def compare_dab(slide: Path, device: str = "cuda", workers: int = 14) -> bool:
    """The DAB scorer on the CPU workers and on the device (GPU and CPU decoding): same slide result.

    Prints, per mode, the end-to-end tissue tiles/s of the second (warm) run of ``score_slide``.
    """
    from wsi_her2.config import LoaderConfig
    from wsi_her2.pipeline import score_slide
    from wsi_her2.settings import ScoreSettings

    on = "cuda" if device == "cuda" else "cpu-tensors"
    results = {}
    for name, where, decode in (("cpu", "cpu", "cpu"), (f"{device}+gpu-decode", on, "gpu"),
                                (f"{device}+cpu-decode", on, "cpu")):  # fmt: skip
        settings = ScoreSettings(loader=LoaderConfig(workers=workers, decode=decode))
        scorer = _dab_scorer(where)
        try:
            score_slide(slide, scorer, settings)  # warm: worker pool, CUDA kernels
            results[name] = result = score_slide(slide, scorer, settings)
        except Exception as exc:
            print(f"DAB {slide.name} {name}: FAILED: {type(exc).__name__}: {exc}")
            continue
        t = result.timings_s
        print(f"DAB {slide.name} {name}: {len(result.slide.grid)} tiles, {t['tiles_per_s']:,.1f} tiles/s end to end "
              f"(the scorer waited for tiles {t['waiting_for_tiles_s'] / t['tiles_and_model_s']:.0%} of the time); "
              f"decode {result.runtime['tile_decode']}")  # fmt: skip
    if "cpu" not in results:
        return False
    cpu, ok = results["cpu"], True
    for name in (n for n in results if n != "cpu"):
        dev = results[name]
        a, b = cpu.scorer_summary, dev.scorer_summary
        fractions = max(abs(a["tumour_cells"]["fractions"][c] - b["tumour_cells"]["fractions"][c])
                        for c in ("0", "1+", "2+", "3+"))  # fmt: skip
        index = abs(a["membrane_index"] - b["membrane_index"])
        same_kept = np.array_equal(cpu.predictions.scored, dev.predictions.scored)
        # The tolerances of the CPU tests (tests/models/dab/agreement.py) for a whole slide.
        good = cpu.score.score == dev.score.score and fractions < 0.01 and index < 2
        print(f"DAB {slide.name} {name} vs cpu: slide score {cpu.score.score} / {dev.score.score}; tumour-class "
              f"fractions within {fractions:.4f}; membrane index {a['membrane_index']:.1f} / "
              f"{b['membrane_index']:.1f}; same scored tiles {same_kept} -> {'ok' if good else 'DIFFERENT'}")  # fmt: skip
        ok &= good
    return ok and len(results) == 3


def dab_slides(tmp: Path, small: bool = False) -> list[Path]:
    """The real HER2 2+ core as a tiled JPEG SVS (when in .gpu-data/ihc/), and a synthetic IHC slide.

    ``small``: the core's central 2048 px and a 4096-px synthetic slide (a CPU dry run).
    """
    import cv2

    from wsi_her2.synthetic import write_image_slide, write_synthetic_slide

    out = []
    core = DATA / "ihc" / "her2-tma-core-score2plus.jpg"
    if core.exists():
        rgb = cv2.cvtColor(cv2.imread(str(core)), cv2.COLOR_BGR2RGB)
        if small:
            y0, x0 = (rgb.shape[0] - 2048) // 2, (rgb.shape[1] - 2048) // 2
            rgb = rgb[y0 : y0 + 2048, x0 : x0 + 2048]
        out.append(tmp / "her2-core-2plus.svs")
        write_image_slide(out[-1], rgb, mpp=0.25)
    else:
        print(f"{core.name}: not in .gpu-data/ihc/, skipped")
    out.append(tmp / "synthetic-ihc.svs")
    side = (4096, 4096) if small else (20000, 15000)
    write_synthetic_slide(out[-1], width=side[0], height=side[1], mpp=0.25, stain="ihc", seed=5)
    return out


def _safe(check, *args, **kwargs) -> bool:
    """Run one check; an exception fails it and the others still run."""
    try:
        return bool(check(*args, **kwargs))
    except Exception as exc:
        print(f"{check.__name__}{args[:3]}: FAILED: {type(exc).__name__}: {exc}")
        return False


def main() -> None:
    import argparse

    import torch

    from wsi_her2.synthetic import write_synthetic_slide

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run-cpu", action="store_true",
                        help="run every step on the CPU (the GPU code paths on CPU tensors, a tiny model): "
                        "checks this script before a GPU session spends its time on it")  # fmt: skip
    args = parser.parse_args()
    device, arch = ("cpu", "test_resnet") if args.dry_run_cpu else ("cuda", "convnext_tiny")
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU: nothing to check")
        return
    slide = make_slide()
    ok = _safe(compare_pixels, slide, 1024, 256, device=device)
    ok &= _safe(compare_pixels, slide, 1024, 224, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        rgb = Path(tmp) / "rgb-coded.svs"
        write_synthetic_slide(rgb, width=8192, height=6144, photometric="rgb", seed=3)
        ok &= _safe(compare_pixels, rgb, 1024, 256, device=device)
    for name, tile, out, mpp in (("aperio-cmu1-small-region.svs", 480, 224, None),
                                 ("ome-tiff-he-crop.ome.tif", 300, 224, 0.25)):  # fmt: skip
        if (DATA / name).exists():
            ok &= _safe(compare_pixels, DATA / name, tile, out, mpp, device=device)
        else:
            print(f"{name}: not in .gpu-data/, skipped")
    ok &= _safe(compare_scores, slide, device, arch)
    with tempfile.TemporaryDirectory() as tmp:
        for dab_slide in dab_slides(Path(tmp), small=device != "cuda"):
            ok &= _safe(compare_dab, dab_slide, device, 14 if device == "cuda" else 2)
    print("GPU CHECK", "PASSED" if ok else "FAILED")


if __name__ == "__main__":
    main()
