"""A miniature BCI-layout dataset with a learnable signal, for tests, demos and the smoke run.

Images are rendered with Beer-Lambert from the standard stain vectors: a grid of cells with
hematoxylin nuclei and, in IHC images, DAB membranes whose optical density and completeness follow
the HER2 score (0: none or barely visible, 1+: faint and incomplete, 2+: moderate and complete,
3+: strong and complete), on a share of tumour cells that varies per image. The H&E partner of
each IHC image (same file name) carries a weaker class-correlated signal: nuclei grow and eosin
darkens slightly with the score, with more noise than signal per cell.

None of this resembles real tissue closely; it only gives a network something to learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_her2.her2 import SCORES_4
from wsi_her2.outputs.atomic import ensure_dir
from wsi_her2.outputs.images import write_image


def _unit(v: tuple[float, float, float]) -> np.ndarray:
    a = np.asarray(v, np.float32)
    return a / np.linalg.norm(a)


HEMATOXYLIN = _unit((0.651, 0.701, 0.290))
EOSIN = _unit((0.072, 0.990, 0.105))
DAB = _unit((0.269, 0.568, 0.778))
# Membrane DAB optical density and stained share of the circumference per score (0, 1+, 2+, 3+).
MEMBRANE_OD = (0.02, 0.14, 0.32, 0.70)
COMPLETENESS = (0.25, 0.5, 0.9, 1.0)


def _cell_geometry(size_px: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-pixel distance to its cell's centre, angle around it, cell index; and the cell spacing."""
    spacing = int(np.clip(size_px // 6, 12, 40))
    n = -(-size_px // spacing)
    yy, xx = np.mgrid[0:size_px, 0:size_px].astype(np.float32)
    row, col = (yy // spacing).astype(int), (xx // spacing).astype(int)
    cell = row * n + col
    jitter = rng.uniform(-0.1, 0.1, (n * n, 2)).astype(np.float32) * spacing
    cy = (row + 0.5) * spacing + jitter[cell, 0]
    cx = (col + 0.5) * spacing + jitter[cell, 1]
    radius = np.hypot(yy - cy, xx - cx)
    start = rng.uniform(0, 2 * np.pi, n * n).astype(np.float32)
    angle = np.mod(np.arctan2(yy - cy, xx - cx) - start[cell], 2 * np.pi)
    return radius, angle, cell, spacing


def _to_rgb(od: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    od = cv2.GaussianBlur(od, (0, 0), 0.6)
    rgb = 255.0 * np.power(10.0, -od) + rng.normal(0, 2.0, od.shape)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def render_patch(score: int, size_px: int, seed: int, stain: str = "ihc") -> np.ndarray:
    """One synthetic patch of HER2 score index ``score`` (0..3) as RGB uint8.

    The IHC and H&E patches of one ``seed`` share their cell layout, like BCI's registered pairs.
    """
    rng = np.random.default_rng(seed)
    radius, angle, cell, spacing = _cell_geometry(size_px, rng)
    n_cells = int(cell.max()) + 1
    tumour = rng.random(n_cells) < rng.uniform(0.6, 0.95)
    nucleus_r = spacing * 0.2 * (1 + rng.normal(0, 0.1, n_cells))
    membrane_r = spacing * 0.4
    h_od = np.full(radius.shape, 0.04, np.float32)
    if stain == "ihc":
        h_od[radius <= nucleus_r[cell]] = 0.45
        od_mean = MEMBRANE_OD[score] * rng.uniform(0.8, 1.2)
        membrane_od = np.where(tumour, od_mean * rng.uniform(0.7, 1.3, n_cells), 0.0).astype(np.float32)
        complete = np.clip(COMPLETENESS[score] + rng.normal(0, 0.1, n_cells), 0.1, 1.0)
        ring = np.abs(radius - membrane_r) <= max(1.0, 0.06 * spacing)
        arc = angle <= 2 * np.pi * complete[cell]
        d_od = np.where(ring & arc, membrane_od[cell], 0.0).astype(np.float32)
        od = h_od[..., None] * HEMATOXYLIN + d_od[..., None] * DAB
    else:
        # H&E: larger, darker tumour nuclei and slightly denser eosin with higher scores (weak signal).
        grow = np.where(tumour, 1.0 + 0.12 * score, 1.0) * (1 + rng.normal(0, 0.12, n_cells))
        h_od[radius <= nucleus_r[cell] * grow[cell]] = 0.5 + 0.04 * score
        eosin = np.float32(0.18 + 0.03 * score + rng.normal(0, 0.04))
        e_od = np.where(radius <= membrane_r, eosin, 0.5 * eosin).astype(np.float32)
        od = h_od[..., None] * HEMATOXYLIN + e_od[..., None] * EOSIN
    return _to_rgb(od.astype(np.float32), rng)


def write_synthetic_bci(
    root: str | Path,
    n_per_class: int = 16,
    size_px: int = 64,
    seed: int = 0,
    *,
    test_per_class: int | None = None,
    class_counts: dict[str, int] | None = None,
) -> Path:
    """Write ``ROOT/{HE,IHC}/{train,test}/NNNNN_{split}_{score}.png`` like the BCI dataset.

    Args:
        root: the dataset folder to create.
        n_per_class: training images per class.
        size_px: image side (BCI's is 1024; tests use 64-128).
        seed: fixes every image.
        test_per_class: test images per class (default: a quarter of ``n_per_class``, at least 2).
        class_counts: training images per score name instead of ``n_per_class`` (e.g. an
            imbalance like BCI's, where score 0 is ~4%).

    Returns:
        ``root``.
    """
    root = Path(root)
    test_n = test_per_class if test_per_class is not None else max(2, n_per_class // 4)
    for split, base in (("train", 0), ("test", 1_000_000)):
        for stain_dir in ("IHC", "HE"):
            ensure_dir(root / stain_dir / split)
        number = 0
        for score, name in enumerate(SCORES_4):
            count = test_n if split == "test" else (class_counts or {}).get(name, n_per_class)
            for _ in range(count):
                file = f"{number:05d}_{split}_{name}.png"
                image_seed = seed * 10_000_019 + base + number
                write_image(root / "IHC" / split / file, render_patch(score, size_px, image_seed, "ihc"))
                write_image(root / "HE" / split / file, render_patch(score, size_px, image_seed, "he"))
                number += 1
    return root
