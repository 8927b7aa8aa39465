"""Training speed of ConvNeXt-Tiny at 224 px: optimisation steps/s and data loading/s, side by side.

Two rates per batch size, in one run so they can be compared as a ratio:

* **step rate**: images/s through ``to_input`` + forward + backward + Adam step, on batches already in
  memory (random weights, synthetic uint8 images): what the device can do;
* **loading rate**: steady-state images/s delivered by the training DataLoader with ``--workers``
  processes: "decode" reads BCI-sized 1024x1024 PNGs (decode, area resize to 224, flips, shifts);
  "cached" serves images already decoded in memory (``--cache-images``; flips and shifts only).

A loading/step ratio below 1 means the device waits for data. On CUDA the step runs with bf16
autocast and channels-last, as training does.

Usage: python benchmarks/bench_train.py [--device cpu|cuda|auto] [--batch-sizes 16 128] [--steps 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from wsi_her2.models.card import ModelCard  # noqa: E402
from wsi_her2.models.preprocess import normalisation, to_input  # noqa: E402
from wsi_her2.models.registry import create_model  # noqa: E402
from wsi_her2.training.augment import Augmentation  # noqa: E402
from wsi_her2.training.datasets import LabelledImages  # noqa: E402
from wsi_her2.training.device import autocast, resolve_device, use_bf16  # noqa: E402
from wsi_her2.training.loader import EpochSampler, ImageDataset, decode_all, make_loader  # noqa: E402
from wsi_her2.training.synthetic import render_patch  # noqa: E402

SIZE_PX = 224


def _peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def _available_gib() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


def step_rate(device: torch.device, batch: int, steps: int, warmup: int) -> tuple[float, float]:
    """Training images/s at ``batch`` and the peak host memory (GiB) so far."""
    torch.manual_seed(0)
    card = ModelCard("convnext_tiny", ("0", "1+", "2+", "3+"), "ihc")
    cuda = device.type == "cuda"
    model = create_model("convnext_tiny", 4).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch, SIZE_PX, SIZE_PX, 3), np.uint8))
    if cuda:
        images = images.pin_memory()
    labels = torch.randint(0, 4, (batch,), device=device)
    stats = normalisation(card, device)
    bf16 = use_bf16(device, True)
    model.train()

    def one_step() -> None:
        x = to_input(images, card, device, channels_last=cuda, non_blocking=True, stats=stats)
        with autocast(device, bf16):
            logits = model(x)
        loss = loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        one_step()
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        one_step()
    if cuda:
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - started), _peak_rss_gib()


def loading_rate(folder: Path, batch: int, workers: int, *, cached: bool) -> float:
    """Steady-state images/s delivered by the training DataLoader (decode or memory cache, flips, shifts).

    The patch files are listed cyclically so that every worker has whole batches to build (a
    DataLoader builds each batch in one worker); the first batch (worker start) is not timed.
    """
    files = sorted(folder.glob("*.png"))
    n = max(256, batch * max(1, workers) * 3)
    paths = [files[i % len(files)] for i in range(n)]
    images = LabelledImages(folder, "folders", "all", ("0",), paths, np.zeros(n, np.int64), [""] * n)
    cache = None
    if cached:
        unique = decode_all(dataclasses.replace(images, paths=files, labels=np.zeros(len(files), np.int64)), SIZE_PX)
        cache = unique[np.arange(n) % len(files)]
    dataset = ImageDataset(images, SIZE_PX, Augmentation(), seed=0, cache=cache)
    loader = make_loader(dataset, EpochSampler(dataset.labels, 0, shuffle=True), batch, workers)
    count, started = 0, 0.0
    for k, (batch_images, _) in enumerate(loader):
        if k == 0:
            started = time.perf_counter()
            continue
        count += len(batch_images)
    return count / (time.perf_counter() - started)


def write_patches(folder: Path, n: int) -> None:
    import cv2

    for i in range(n):
        rgb = render_patch(i % 4, 1024, seed=i)
        cv2.imwrite(str(folder / f"{i:05d}_train_{i % 4}+.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per batch size")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--patches", type=int, default=32, help="distinct 1024-px PNGs for the loading test")
    args = parser.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(
        f"device: {device.type} ({name}); torch {torch.__version__}; threads {torch.get_num_threads()}; "
        f"cores {os.cpu_count()}; loader workers {args.workers}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_patches(folder, args.patches)
        print(
            f"{'batch':>6} {'step img/s':>11} {'decode img/s':>13} {'decode/step':>12} "
            f"{'cached img/s':>13} {'cached/step':>12} {'peak RSS GiB':>13}"
        )
        base_gib, per_image_gib = _peak_rss_gib(), None
        for batch in args.batch_sizes:
            if device.type == "cpu" and per_image_gib is not None:
                # Host memory grows about linearly with the batch; do not push a shared machine into swap or OOM.
                needed = base_gib + per_image_gib * batch
                if needed > 0.8 * _available_gib() + base_gib:
                    print(
                        f"{batch:>6} skipped: needs ~{needed:.0f} GiB of host memory, {_available_gib():.0f} GiB free"
                    )
                    continue
            try:
                steps, rss = step_rate(device, batch, args.steps, args.warmup)
            except (RuntimeError, MemoryError) as exc:  # out of memory: report and go on
                print(f"{batch:>6} failed: {str(exc).splitlines()[0][:80]}")
                continue
            if per_image_gib is None:
                per_image_gib = max(0.0, rss - base_gib) / batch
            decode = loading_rate(folder, batch, args.workers, cached=False)
            cached = loading_rate(folder, batch, args.workers, cached=True)
            print(
                f"{batch:>6} {steps:>11.1f} {decode:>13.1f} {decode / steps:>12.2f} "
                f"{cached:>13.1f} {cached / steps:>12.2f} {rss:>13.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
