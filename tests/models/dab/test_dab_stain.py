"""Colour deconvolution, per-slide stain vectors and the H&E / IHC stain check."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from skimage import data

from tests.models.dab.conftest import FIXTURES, CellSpec, load_rgb, render_tile, resample
from wsi_her2.models.dab import (
    DabConfig,
    StainVectors,
    check_stain,
    default_stain_vectors,
    estimate_stain_vectors,
    separate_stains,
)


def angle(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    cos = float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def rotate_towards(v: tuple[float, ...], w: tuple[float, ...], degrees: float) -> tuple[float, ...]:
    v_, w_ = np.asarray(v), np.asarray(w)
    perp = w_ - np.dot(w_, v_) * v_
    perp /= np.linalg.norm(perp)
    t = math.radians(degrees)
    return tuple(math.cos(t) * v_ + math.sin(t) * perp)


def test_separate_stains_returns_base10_od_of_known_amounts() -> None:
    stains = default_stain_vectors()
    h, d = np.asarray(stains.hematoxylin), np.asarray(stains.dab)
    od = 0.3 * h + 0.5 * d
    rgb = np.clip(255 * 10 ** (-od) + 0.5, 0, 255).astype(np.uint8)[None, None, :].repeat(4, 0).repeat(4, 1)
    h_od, dab_od = separate_stains(rgb, stains)
    assert h_od.dtype == np.float32 and h_od.shape == (4, 4)
    assert h_od.mean() == pytest.approx(0.3, abs=0.02)
    assert dab_od.mean() == pytest.approx(0.5, abs=0.02)  # base 10, not scikit-image's ln-based OD/6


def test_default_vectors_are_unit_ruifrok_johnston() -> None:
    stains = default_stain_vectors()
    assert np.linalg.norm(stains.hematoxylin) == pytest.approx(1.0)
    assert angle(stains.hematoxylin, (0.650, 0.704, 0.286)) < 1.0
    assert angle(stains.dab, (0.268, 0.570, 0.776)) < 1.0
    assert stains.source == "default"
    assert set(stains.to_dict()) == {"hematoxylin", "dab", "source"}


def test_estimate_recovers_known_vectors_on_synthetic_tissue() -> None:
    ref = default_stain_vectors()
    # A lab whose hematoxylin is bluer and whose DAB is redder than the standard ones.
    true_h = rotate_towards(ref.hematoxylin, (0.9, 0.45, 0.1), 8)
    true_d = rotate_towards(ref.dab, (0.1, 0.5, 0.9), 6)
    rgb = render_tile([CellSpec(0.5, 1.0, cytoplasm_dab_od=0.1), CellSpec(0.3, 0.6)], stains=(true_h, true_d))
    est = estimate_stain_vectors(rgb)
    assert est.source == "estimated"
    assert angle(est.hematoxylin, true_h) < 3.0
    assert angle(est.dab, true_d) < 3.0


def test_estimate_falls_back_on_dab_free_input() -> None:
    rgb = render_tile([CellSpec()])
    est = estimate_stain_vectors(rgb)
    assert est.source.startswith("default (estimate rejected:")
    assert "DAB" in est.source
    assert est.hematoxylin == default_stain_vectors().hematoxylin


def test_estimate_falls_back_on_glass_and_on_implausible_colours() -> None:
    assert estimate_stain_vectors(np.full((64, 64, 3), 250, np.uint8)).source.startswith("default (")
    # Green and magenta "stains": far from hematoxylin and DAB.
    rgb = render_tile([CellSpec(0.5, 1.0)], stains=((0.9, 0.1, 0.4), (0.1, 0.2, 0.97)))
    assert estimate_stain_vectors(rgb).source.startswith("default (estimate rejected")


def test_estimate_respects_tissue_mask_and_checks_its_shape() -> None:
    rgb = render_tile([CellSpec(0.5, 1.0)])
    mask = np.zeros(rgb.shape[:2], bool)
    assert estimate_stain_vectors(rgb, mask).source.startswith("default (")
    with pytest.raises(ValueError):
        estimate_stain_vectors(rgb, np.ones((3, 3), bool))


def test_stain_vectors_validate() -> None:
    with pytest.raises(ValueError):
        StainVectors(hematoxylin=(0.0, 0.0, 0.0), dab=(0.3, 0.6, 0.8))
    with pytest.raises(ValueError):
        StainVectors(hematoxylin=(0.3, 0.6, 0.8), dab=(0.3, 0.6, 0.8))


def test_stain_check_accepts_synthetic_ihc_and_reports_scores() -> None:
    result = check_stain(render_tile([CellSpec(0.4, 1.0)]))
    assert result.stain == "ihc"
    d = result.to_dict()
    assert {"stain", "message", "pink_fraction", "dab_fraction", "n_pixels"} <= set(d)
    assert check_stain(np.full((32, 32, 3), 250, np.uint8)).stain == "unknown"


def test_stain_check_accepts_skimage_ihc() -> None:
    result = check_stain(data.immunohistochemistry())
    assert result.stain == "ihc", result.message


def _thumb(name: str, mpp: float) -> np.ndarray:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"real test data not found: {path}")
    return resample(load_rgb(path), mpp, 3.0)


@pytest.mark.parametrize(
    ("name", "mpp"),
    [
        ("ihc/her2-tma-core-score0.jpg", 0.25),
        ("ihc/her2-tma-core-score2plus.jpg", 0.25),
        ("ihc/ki67-ihc-hamamatsu-crop.ome.tif", 0.23),
    ],
)
def test_stain_check_accepts_real_ihc(name: str, mpp: float) -> None:
    result = check_stain(_thumb(name, mpp))
    assert result.stain == "ihc", result.message
    assert result.pink_fraction < 0.02


@pytest.mark.parametrize(
    "name", ["he/he-patch-1000px.png", "he/he-red-pen-mark.png", "slides/ome-tiff-he-crop.ome.tif"]
)
def test_stain_check_refuses_real_he(name: str) -> None:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"real test data not found: {path}")
    if path.suffix == ".png":
        rgba = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        rgb = cv2.cvtColor(rgba[..., :3], cv2.COLOR_BGR2RGB)
    else:
        rgb = load_rgb(path)
    for img in (rgb, cv2.resize(rgb, (rgb.shape[1] // 6, rgb.shape[0] // 6), interpolation=cv2.INTER_AREA)):
        result = check_stain(img)
        assert result.stain == "he", result.message
        assert "H&E" in result.message and "--model" in result.message


def test_stain_check_refuses_aperio_he_thumbnail() -> None:
    openslide = pytest.importorskip("openslide")
    path = FIXTURES / "slides" / "aperio-cmu1-small-region.svs"
    if not path.exists():
        pytest.skip(f"real test data not found: {path}")
    with openslide.OpenSlide(str(path)) as slide:
        thumb = np.asarray(slide.get_thumbnail((400, 400)).convert("RGB"))
    assert check_stain(thumb).stain == "he"


def test_stain_check_uses_tissue_mask() -> None:
    he_like = np.zeros((256, 256, 3), np.uint8)
    he_like[:] = (230, 120, 190)  # eosin pink
    he_like[:, 128:] = render_tile([CellSpec(0.4, 1.0)], size_px=256)[:, 128:]
    mask = np.zeros((256, 256), bool)
    mask[:, 128:] = True
    assert check_stain(he_like).stain == "he"  # the pink half wins when the whole image is judged
    assert check_stain(he_like, mask).stain == "ihc"


def test_estimated_vectors_on_real_cores_are_plausible(core0: object, core2: object) -> None:
    assert core0.stains.source.startswith("default (estimate rejected")  # HER2-0: no DAB colour
    assert core2.stains.source == "estimated"
    ref = default_stain_vectors()
    assert angle(core2.stains.dab, ref.dab) < DabConfig().estimate_max_angle_deg
