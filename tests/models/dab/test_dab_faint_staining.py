"""Faint membranes count as 1+, against the slide's own background and stain; the membrane index orders cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.models.dab.conftest import MPP, RealImage, restain
from wsi_her2.models.dab import DabConfig, estimate_stain_vectors
from wsi_her2.models.dab.background import BIN_OD, MIN_PIXELS, N_BINS, background_from_histogram, line_histogram
from wsi_her2.models.dab.classify import classify_cells, membrane_index, resolve_thresholds
from wsi_her2.models.dab.intensity import measure_intensity
from wsi_her2.models.dab.slide_cells import score_image

CFG = DabConfig()


def summary_of(rgb: np.ndarray) -> dict:
    import cv2

    thumb = cv2.resize(rgb, (rgb.shape[1] // 4, rgb.shape[0] // 4), interpolation=cv2.INTER_AREA)
    # Lighter variants have less tissue above the fixed OD cut: take tiles a quarter tissue.
    done = score_image(rgb, estimate_stain_vectors(thumb, None, CFG), CFG, mpp=MPP, min_tissue_fraction=0.25)
    return done.summary


def at_least_1plus(summary: dict) -> float:
    f = summary["tumour_cells"]["fractions"]
    return f["1+"] + f["2+"] + f["3+"]


@pytest.fixture(scope="module")
def faint(core2: RealImage) -> np.ndarray:
    """The 2+ core with a quarter of its DAB: faint, barely perceptible membranes (a 1+-like case)."""
    return restain(core2.work, core2.stains, dab_scale=0.25)


def test_faint_membranes_make_a_case_her2_low(faint: np.ndarray) -> None:
    s = summary_of(faint)
    assert at_least_1plus(s) > 0.15, s["tumour_cells"]
    assert s["tumour_cells"]["fractions"]["2+"] + s["tumour_cells"]["fractions"]["3+"] < 0.1


def test_a_uniformly_lighter_run_keeps_a_faint_case_her2_low(faint: np.ndarray, core2: RealImage) -> None:
    lighter = summary_of(restain(faint, core2.stains, all_scale=0.75))
    assert lighter["stain_intensity"]["factor"] < 0.95
    assert at_least_1plus(lighter) > 0.12, lighter["tumour_cells"]


def test_the_2plus_core_stays_2plus_when_lighter(core2: RealImage) -> None:
    s = summary_of(restain(core2.work, core2.stains, all_scale=0.75))
    f = s["tumour_cells"]["fractions"]
    assert f["2+"] + f["3+"] > 0.15 and f["3+"] < 0.1


@pytest.mark.parametrize(("all_scale", "quality"), [(1.0, 60), (1.33, 90)])
def test_the_score0_core_stays_0_darker_or_recompressed(core0: RealImage, all_scale: float, quality: int) -> None:
    s = summary_of(restain(core0.work, core0.stains, all_scale=all_scale, jpeg_quality=quality))
    assert at_least_1plus(s) < 0.03, s["tumour_cells"]


def test_membrane_index_orders_negative_faint_and_2plus(core0: RealImage, core2: RealImage, faint: np.ndarray) -> None:
    negative, weak, positive = summary_of(core0.work), summary_of(faint), summary_of(core2.work)
    assert negative["membrane_index"] < 5
    assert negative["membrane_index"] < weak["membrane_index"] < positive["membrane_index"] <= 300
    assert positive["membrane_index"] > 100


def test_the_two_cores_measure_a_similar_low_background(core0: RealImage, core2: RealImage) -> None:
    for image in (core0, core2):
        levels = summary_of(image.work)["membrane_levels"]
        assert levels["source"] == "slide nuclei"
        assert 0.005 < levels["background_od"] < 0.035
        assert math.isclose(levels["od_1plus"] - levels["background_od"], CFG.membrane_od_1plus, rel_tol=0.35)


def test_levels_are_contrasts_above_the_background_capped_or_absolute() -> None:
    measured = resolve_thresholds(CFG, 0.02, "slide nuclei")
    assert math.isclose(measured.od_1plus, 0.02 + CFG.membrane_od_1plus)
    assert measured.od_1plus < measured.od_2plus < measured.od_3plus
    capped = resolve_thresholds(CFG, 0.4, "slide nuclei")
    assert capped.background_od == CFG.background_max_od and "capped" in capped.source
    unknown = resolve_thresholds(CFG, None, "slide nuclei")
    assert unknown.background_od == CFG.background_default_od and unknown.source.startswith("default")
    absolute = resolve_thresholds(CFG.replace(membrane_reference="absolute"), 0.03, "slide nuclei")
    assert absolute.background_od == CFG.background_default_od


def test_cell_classes_follow_partial_and_complete_signals() -> None:
    levels = resolve_thresholds(CFG, 0.0, "test")
    partial = np.array([0.0, levels.od_1plus, 0.5, 0.5, 0.5])
    complete = np.array([0.0, 0.0, levels.od_1plus, levels.od_2plus, levels.od_3plus])
    assert classify_cells(partial, complete, levels).tolist() == [0, 1, 1, 2, 3]


def test_background_is_the_median_of_the_pooled_histogram() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(0.0, 0.04, 20_000)
    hist = line_histogram(values) + line_histogram(np.full(100, 9.0))  # out of range goes to the last bin
    assert len(hist) == N_BINS and hist[-1] == 100
    assert abs(background_from_histogram(hist) - 0.0201) < BIN_OD
    assert background_from_histogram(line_histogram(np.zeros(MIN_PIXELS - 1))) is None


def test_membrane_index_is_the_h_score_of_the_counts() -> None:
    assert membrane_index([25, 25, 25, 25]) == 150.0
    assert membrane_index([0, 0, 0, 10]) == 300.0
    assert math.isnan(membrane_index([0, 0, 0, 0]))
    per_tile = membrane_index(np.array([[10, 0, 0, 0], [0, 10, 0, 0], [0, 0, 0, 0]]))
    assert per_tile[:2].tolist() == [0.0, 100.0] and math.isnan(per_tile[2])


def test_stain_intensity_follows_the_counterstain_not_the_dab(core2: RealImage) -> None:
    import cv2

    def factor(rgb: np.ndarray) -> float:
        thumb = cv2.resize(rgb, (rgb.shape[1] // 8, rgb.shape[0] // 8), interpolation=cv2.INTER_AREA)
        return measure_intensity(thumb, None, core2.stains, CFG).factor

    base = factor(core2.work)
    assert 0.9 < base < 1.1  # the reference was read off the visible cores
    assert factor(restain(core2.work, core2.stains, all_scale=0.8)) < base - 0.1
    assert abs(factor(restain(core2.work, core2.stains, dab_scale=0.3)) - base) < 0.08
    off = CFG.replace(intensity_reference="none")
    assert measure_intensity(core2.thumb, None, core2.stains, off).factor == 1.0
