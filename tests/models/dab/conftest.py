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
            h_sq[nucleus] = 0.22  # about the real cores' nuclei (mean H OD 0.15-0.2)
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


def render_tissue(*, size_px: int = 1024, seed: int = 0, membrane_od: float = 0.0) -> tuple[np.ndarray, int]:
    """Synthetic tissue: a carcinoma nest on the left, stroma with inflammatory cells on the right.

    Left of ``boundary`` (returned): a cohesive sheet of large, round, pale (vesicular) nuclei 14 µm
    apart, with a membrane of ``membrane_od`` between cells. Right: scattered spindle nuclei
    (fibroblasts), small dense lymphocytes, some in a cluster, and a few isolated large round cells
    (macrophage-like), on faint collagen. At 0.5 µm/px.
    """
    rng = np.random.default_rng(seed)
    h_vec, d_vec = default_stain_vectors().hematoxylin, default_stain_vectors().dab
    px = 1.0 / MPP
    h_od = np.full((size_px, size_px), 0.05, np.float32)
    d_od = np.zeros((size_px, size_px), np.float32)
    boundary = size_px // 2
    yy, xx = np.mgrid[0:size_px, 0:size_px].astype(np.float32)

    def nucleus(cx: float, cy: float, a_um: float, b_um: float, angle: float, od: float, rim: float = 0.0) -> None:
        r = int((max(a_um, b_um) + 2) * px)
        y0, y1, x0, x1 = max(0, int(cy) - r), min(size_px, int(cy) + r), max(0, int(cx) - r), min(size_px, int(cx) + r)
        u = (xx[y0:y1, x0:x1] - cx) * np.cos(angle) + (yy[y0:y1, x0:x1] - cy) * np.sin(angle)
        v = -(xx[y0:y1, x0:x1] - cx) * np.sin(angle) + (yy[y0:y1, x0:x1] - cy) * np.cos(angle)
        d = np.sqrt((u / (a_um * px)) ** 2 + (v / (b_um * px)) ** 2)
        patch = h_od[y0:y1, x0:x1]
        patch[d <= 1] = np.maximum(patch[d <= 1], od)
        if rim:
            patch[(d > 0.75) & (d <= 1)] += rim  # vesicular: chromatin at the rim

    spacing = 14.0 * px
    rows = np.arange(spacing / 2, size_px, spacing * 0.87)
    for j, y in enumerate(rows):
        for x in np.arange(spacing / 2 + (spacing / 2) * (j % 2), boundary - spacing / 3, spacing):
            cx, cy = x + rng.uniform(-1, 1) * px, y + rng.uniform(-1, 1) * px
            nucleus(cx, cy, rng.uniform(4.3, 5.0), rng.uniform(3.8, 4.4), rng.uniform(0, np.pi), 0.17, 0.06)
    if membrane_od:
        # Membranes: the borders between neighbouring cells of the nest (a honeycomb).
        from scipy.spatial import cKDTree

        pts = np.array([(x, y) for j, y in enumerate(rows)
                        for x in np.arange(spacing / 2 + (spacing / 2) * (j % 2), boundary, spacing)])  # fmt: skip
        left = xx < boundary
        dist, _ = cKDTree(pts).query(np.stack([xx[left], yy[left]], axis=1), k=2)
        border = np.abs(dist[:, 1] - dist[:, 0]) < 1.2 * px
        d_left = d_od[left]
        d_left[border] += membrane_od
        d_od[left] = d_left
    # Stroma: fibroblasts (spindles), lymphocytes (small, dense; one cluster), a few macrophages.
    for _ in range(int((size_px - boundary) * size_px / (34 * px) ** 2)):
        cx, cy = rng.uniform(boundary + 6 * px, size_px - 4), rng.uniform(4, size_px - 4)
        nucleus(cx, cy, rng.uniform(7.0, 9.0), rng.uniform(1.3, 1.8), rng.uniform(-0.3, 0.3), 0.3)
    for _ in range(40):
        cx, cy = rng.uniform(boundary + 6 * px, size_px - 4), rng.uniform(4, size_px - 4)
        nucleus(cx, cy, 2.6, 2.5, 0.0, 0.45)
    centre = (boundary + (size_px - boundary) * 0.6, size_px * 0.3)
    for _ in range(40):
        cx, cy = centre[0] + rng.normal(0, 12 * px), centre[1] + rng.normal(0, 12 * px)
        nucleus(
            float(np.clip(cx, boundary + 6 * px, size_px - 4)), float(np.clip(cy, 4, size_px - 4)), 2.6, 2.5, 0.0, 0.45
        )
    for _ in range(6):
        cx, cy = rng.uniform(boundary + 10 * px, size_px - 10 * px), rng.uniform(10 * px, size_px - 10 * px)
        nucleus(cx, cy, 4.8, 4.2, 0.0, 0.18, 0.06)
    od = h_od[..., None] * np.asarray(h_vec, np.float32) + d_od[..., None] * np.asarray(d_vec, np.float32)
    od = cv2.GaussianBlur(od, (0, 0), 0.7)
    rgb = 255.0 * np.power(10.0, -od) + rng.normal(0, 1.5, od.shape)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8), boundary


def restain(
    rgb: np.ndarray, stains: object, *, dab_scale: float = 1.0, all_scale: float = 1.0, jpeg_quality: int = 90
) -> np.ndarray:
    """The image as another staining run would show it: DAB amount and all ODs scaled, re-encoded as JPEG.

    ``dab_scale`` changes only the DAB (a weaker or stronger chromogen step: 0.25 turns the 2+ core's
    membranes faint); ``all_scale`` scales every optical density (a thinner section or a brighter
    scan: both stains lighter together).
    """
    from wsi_her2.models.dab import optical_density

    od = optical_density(rgb)
    dab = np.asarray(stains.dab, np.float32)  # type: ignore[attr-defined]
    amount = np.maximum(od.reshape(-1, 3) @ stains.matrix_inverse()[:, 1], 0).reshape(rgb.shape[:2])  # type: ignore[attr-defined]
    od = (od - (1.0 - dab_scale) * amount[..., None] * dab) * all_scale
    out = np.clip(255.0 * np.power(10.0, -od), 0, 255).round().astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture
def one_torch_thread():
    """Torch on one thread: its CPU kernels on many small ops lose far more to thread hand-offs on a
    busy 2-core machine than they gain (the torch DAB tests take 5x longer on two threads there)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
