"""Synthetic H-DAB tiles with known cells, and the real fixtures, for the DAB scorer's tests.

Synthetic tiles are rendered with Beer-Lambert from the standard stain vectors: hematoxylin
nuclei, DAB membrane arcs of a chosen OD and completeness, optional cytoplasmic blush and nuclear
DAB, light blur and noise. One cell per 20 µm grid square at 0.5 µm/px.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from wsi_her2.models.dab import DabConfig, default_stain_vectors, estimate_stain_vectors

FIXTURES = Path(__file__).parents[3] / ".." / "shared" / "fixtures"
MPP = 0.5
CELL_SPACING_UM = 20.0
NUCLEUS_RADIUS_UM = 4.0
MEMBRANE_RADIUS_UM = 8.0
MEMBRANE_WIDTH_UM = 1.5


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """One synthetic cell: membrane DAB OD, stained fraction of the circumference, extras.

    ``cytoplasm_dab_od`` is a diffuse blush over the cell's whole grid square outside the nucleus
    (neighbouring cells touch, as in an epithelium).
    """

    membrane_od: float = 0.0
    completeness: float = 1.0
    nuclear_dab_od: float = 0.0
    cytoplasm_dab_od: float = 0.0


def render_tile(
    specs: list[CellSpec],
    *,
    size_px: int = 512,
    seed: int = 0,
    stains: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None,
) -> np.ndarray:
    """Render cells (row by row on the grid, repeating ``specs``) as an RGB uint8 tile."""
    rng = np.random.default_rng(seed)
    h_vec, d_vec = stains or (default_stain_vectors().hematoxylin, default_stain_vectors().dab)
    px = 1.0 / MPP
    spacing = round(CELL_SPACING_UM * px)
    n_side = size_px // spacing
    h_od = np.full((size_px, size_px), 0.04, np.float32)  # faint counterstain everywhere
    d_od = np.zeros((size_px, size_px), np.float32)
    yy, xx = np.mgrid[0:spacing, 0:spacing].astype(np.float32)  # one grid square
    k = 0
    for row in range(n_side):
        for col in range(n_side):
            spec = specs[k % len(specs)]
            k += 1
            cy, cx = spacing / 2 + rng.uniform(-2, 2), spacing / 2 + rng.uniform(-2, 2)
            r = np.hypot(yy - cy, xx - cx)
            theta = np.mod(np.arctan2(yy - cy, xx - cx) - rng.uniform(0, 2 * np.pi), 2 * np.pi)
            nucleus = r <= NUCLEUS_RADIUS_UM * px
            ring = np.abs(r - MEMBRANE_RADIUS_UM * px) <= MEMBRANE_WIDTH_UM * px / 2
            arc = theta <= 2 * np.pi * spec.completeness
            h_sq = h_od[row * spacing : (row + 1) * spacing, col * spacing : (col + 1) * spacing]
            d_sq = d_od[row * spacing : (row + 1) * spacing, col * spacing : (col + 1) * spacing]
            h_sq[nucleus] = 0.45
            d_sq[nucleus] += spec.nuclear_dab_od
            d_sq[~nucleus] += spec.cytoplasm_dab_od
            d_sq[ring & arc] += spec.membrane_od
    od = h_od[..., None] * np.asarray(h_vec, np.float32) + d_od[..., None] * np.asarray(d_vec, np.float32)
    od = cv2.GaussianBlur(od, (0, 0), 0.7)
    rgb = 255.0 * np.power(10.0, -od) + rng.normal(0, 1.5, od.shape)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def synth() -> Callable[..., np.ndarray]:
    """The synthetic tile renderer."""
    return render_tile


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data not found: {path} (the shared fixtures folder is absent)")
    return path


def load_rgb(path: Path) -> np.ndarray:
    """RGB uint8 of a JPEG/PNG (cv2) or OME-TIFF (tifffile) fixture."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return np.ascontiguousarray(tifffile.imread(path)[..., :3])
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def resample(rgb: np.ndarray, mpp: float, target_mpp: float) -> np.ndarray:
    """Resize an image from ``mpp`` to ``target_mpp`` µm/px (area averaging)."""
    f = mpp / target_mpp
    size = (round(rgb.shape[1] * f), round(rgb.shape[0] * f))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


@dataclasses.dataclass
class RealImage:
    """A real fixture at the scorer's resolution, with its thumbnail and stain vectors."""

    name: str
    work: np.ndarray
    thumb: np.ndarray
    stains: object


def real_image(name: str, filename: str, mpp: float) -> RealImage:
    """Load a fixture, resample to 0.5 µm/px (work) and 2 µm/px (thumbnail), estimate stains."""
    path = _need(FIXTURES / "ihc" / filename)
    rgb = load_rgb(path)
    thumb = resample(rgb, mpp, 2.0)
    return RealImage(name, resample(rgb, mpp, MPP), thumb, estimate_stain_vectors(thumb, None, DabConfig()))


@pytest.fixture(scope="session")
def core0() -> RealImage:
    """The HER2 score-0 TMA core (nominal 0.25 µm/px)."""
    return real_image("score0", "her2-tma-core-score0.jpg", 0.25)


@pytest.fixture(scope="session")
def core2() -> RealImage:
    """The HER2 score-2+ TMA core (nominal 0.25 µm/px)."""
    return real_image("score2plus", "her2-tma-core-score2plus.jpg", 0.25)


@pytest.fixture(scope="session")
def ki67() -> RealImage:
    """The Ki67 (nuclear DAB) crop, about 0.23 µm/px."""
    return real_image("ki67", "ki67-ihc-hamamatsu-crop.ome.tif", 0.23)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The shared real-data folder (skips when absent)."""
    return _need(FIXTURES)
