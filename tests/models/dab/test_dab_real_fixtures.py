"""The DAB scorer on real IHC: the two HER2 cores in the right order and with their scores, Ki67 not positive.

Each image is resampled to 0.5 µm/px and cut into 512-px tiles (256 µm; smaller at the right and
bottom edges); tiles at least half tissue are scored and their cells pooled with the percentage
rule, as a slide would be.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from skimage import data

from tests.models.dab.conftest import MPP, RealImage
from wsi_her2.models.dab import (
    DabConfig,
    DabTileFunction,
    classify_cell_counts,
    estimate_stain_vectors,
    score_tile,
)
from wsi_her2.models.dab.slide_cells import finish_slide, score_image

CFG = DabConfig()


def pooled(image: RealImage, tile: int = 512, min_tissue: float = 0.5) -> dict[str, Any]:
    """Score the image as the pipeline scores a slide: tiles, one background, one tumour gate."""
    done = score_image(image.work, image.stains, CFG, mpp=MPP, tile_px=tile, min_tissue_fraction=min_tissue)
    summary = done.summary
    counts = np.array(list(summary["tumour_cells"]["counts"].values()))
    tumour = done.cells.columns["is_tumour"]
    return {
        "tiles": int(np.isfinite(done.tile_values["n_cells"]).sum()),
        "cells": int(counts.sum()),
        "cells_detected": summary["n_cells_detected"],
        "fractions": counts / max(1, counts.sum()),
        "score": classify_cell_counts(counts.tolist(), CFG),
        "membrane_od": float(done.cells.columns["membrane_od"][tumour].mean()),
        "index": summary["membrane_index"],
        "done": done,
    }


@pytest.fixture(scope="module")
def scored0(core0: RealImage) -> dict[str, float]:
    return pooled(core0)


@pytest.fixture(scope="module")
def scored2(core2: RealImage) -> dict[str, float]:
    return pooled(core2)


def test_cores_have_enough_cells(scored0: dict, scored2: dict) -> None:
    assert scored0["tiles"] >= 10 and scored2["tiles"] >= 10
    assert scored0["cells"] > 1000 and scored2["cells"] > 1000


def test_score2plus_core_ranks_above_score0_core(scored0: dict, scored2: dict) -> None:
    pos0 = scored0["fractions"][2] + scored0["fractions"][3]
    pos2 = scored2["fractions"][2] + scored2["fractions"][3]
    assert pos2 > pos0 + 0.1
    assert scored2["membrane_od"] > 2 * scored0["membrane_od"]


def test_score0_core_scores_0(scored0: dict) -> None:
    assert scored0["score"] == 0, np.round(scored0["fractions"], 3)


def test_score2plus_core_scores_2plus(scored2: dict) -> None:
    assert scored2["score"] == 2, np.round(scored2["fractions"], 3)
    # weak-to-moderate, not intense: well under the 10% of 3+ cells that would make it 3+
    assert scored2["fractions"][3] < 0.05


def test_ki67_nuclear_dab_is_not_her2_positive(ki67: RealImage) -> None:
    result = pooled(ki67, min_tissue=0.3)
    f = result["fractions"]
    assert result["cells"] > 100
    assert f[2] + f[3] < 0.05, np.round(f, 3)
    assert result["score"] <= 1


def test_tile_function_on_full_resolution_core_tiles(core2: RealImage) -> None:
    # The loader's view: 1024-px tiles at 0.25 µm/px, resized inside the tile function.
    import cv2

    fn = DabTileFunction(core2.stains, CFG, mpp=0.25)
    work = core2.work[1024:1536, 1024:1536]
    full = cv2.resize(work, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    out = finish_slide([0], np.zeros(1), np.zeros(1), [fn(full)], 1, 0.5, CFG).tile_values
    direct = score_tile(np.ascontiguousarray(work), core2.stains, CFG).to_dict()
    assert out["n_cells"][0] > 50
    assert abs(out["frac_2plus"][0] - direct["frac_2plus"]) < 0.15


def test_skimage_ihc_is_scored_without_error() -> None:
    rgb = data.immunohistochemistry()
    stains = estimate_stain_vectors(rgb)
    result = score_tile(rgb, stains, CFG)
    assert result.n_cells > 50
    assert result.dab_area_fraction > 0.3
