"""The CAP reproducibility checks: ROI variants, exact comparison of reruns, seeded subsets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from shapely.geometry import MultiPolygon, box

from wsi_her2.config import LoaderConfig
from wsi_her2.settings import ScoreSettings
from wsi_her2.validation.cases import Case
from wsi_her2.validation.checks import (
    OUTLINE_VARIANT,
    choose_subset,
    compare_runs,
    rerun_check,
    roi_check,
    roi_variants,
)
from wsi_her2.validation.scoring import CaseRun, load_validation_scorer, score_case

SETTINGS = ScoreSettings(loader=LoaderConfig(workers=0))


def _run(folder: Path) -> CaseRun:
    return CaseRun.read(folder)


def test_roi_variants_shrink_grow_and_shift_by_the_distance() -> None:
    square = MultiPolygon([box(1000, 1000, 2000, 2000)])
    variants = roi_variants(square, 100.0, 50.0)
    assert set(variants) == {"shrink_50um", "grow_50um", "shift_x_50um", "shift_y_50um"}
    assert variants["shrink_50um"].bounds == (1100, 1100, 1900, 1900)
    assert variants["grow_50um"].bounds == (900, 900, 2100, 2100)
    assert 1200**2 - 4 * 100**2 < variants["grow_50um"].area < 1200**2  # rounded corners
    assert variants["shift_x_50um"].bounds == (1100, 1000, 2100, 2000)
    assert variants["shift_y_50um"].bounds == (1000, 1100, 2000, 2100)
    assert roi_variants(MultiPolygon([box(0, 0, 150, 150)]), 100.0, 50.0)["shrink_50um"] is None


def test_subsets_are_seeded_and_all_when_n_is_none() -> None:
    ids = [f"c{i}" for i in range(10)]
    assert choose_subset(ids, None, 0) == list(range(10))
    assert choose_subset(ids, 3, 5) == choose_subset(ids, 3, 5) and len(choose_subset(ids, 3, 5)) == 3
    assert choose_subset(ids, 3, 5) != choose_subset(ids, 3, 6) or choose_subset(ids, 3, 7) != choose_subset(ids, 3, 5)
    assert choose_subset(ids, 20, 0) == list(range(10))


def test_compare_runs_finds_any_difference_and_none_between_copies(scored: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(scored["1+"], copy)
    assert compare_runs(_run(scored["1+"]), _run(copy)) == []
    assert any(d.startswith("score:") for d in compare_runs(_run(scored["1+"]), _run(scored["2+"])))
    (copy / "tiles.csv").write_text((copy / "tiles.csv").read_text().replace("true", "false", 1))
    assert compare_runs(_run(scored["1+"]), _run(copy)) == ["tiles.csv differs"]


def test_rerun_check_scores_again_and_finds_identical_results(
    case_images: dict[str, Path], scored: dict[str, Path], tmp_path: Path
) -> None:
    cases = [Case(p, case_images[p], 0, mpp=0.5) for p in ("0", "3+")]
    runs = [_run(scored[p]) for p in ("0", "3+")]
    scorer = load_validation_scorer(SETTINGS)

    def score(case: Case, folder: Path, roi: Path | None) -> CaseRun:
        return score_case(case.slide, folder, SETTINGS, scorer=scorer, mpp=case.mpp, roi=roi)

    check = rerun_check(cases, runs, tmp_path / "rerun", score, n=None, seed=0)
    assert check["passed"] and check["identical"] == 2 and check["subset_seed"] is None
    assert all((tmp_path / "rerun" / p / "report.json").is_file() for p in ("0", "3+"))
    swapped = rerun_check(cases, runs[::-1], tmp_path / "rerun2", score, n=None, seed=0)
    assert not swapped["passed"] and all(r["differences"] for r in swapped["per_case"])


def test_roi_check_without_an_roi_perturbs_the_tissue_outline(
    case_images: dict[str, Path], scored: dict[str, Path], tmp_path: Path
) -> None:
    case = Case("faint", case_images["faint6"], 0, mpp=0.5)
    scorer = load_validation_scorer(SETTINGS)

    def score(c: Case, folder: Path, roi: Path | None) -> CaseRun:
        return score_case(c.slide, folder, SETTINGS, scorer=scorer, mpp=c.mpp, roi=roi)

    check = roi_check(
        [case], [_run(scored["faint6"])], tmp_path / "roi", score, SETTINGS, n=None, seed=0, jitter_um=40.0
    )
    row = check["per_case"][0]
    assert row["outline"].startswith("tissue outline")
    assert set(row["variants"]) == {OUTLINE_VARIANT, "shrink_40um", "grow_40um", "shift_x_40um", "shift_y_40um"}
    assert all(v["status"] == "done" for v in row["variants"].values())
    shrunk = json.loads((tmp_path / "roi" / "faint" / "shrink_40um" / "report.json").read_text())
    full = json.loads((scored["faint6"] / "report.json").read_text())
    assert sum(shrunk["result"]["cell_counts"].values()) < sum(full["result"]["cell_counts"].values())
    indices = [v["index"] for v in row["variants"].values()] + [row["index"]]
    assert row["index_spread"] == pytest.approx(max(indices) - min(indices))
    assert row["score_changed"] == any(v["score"] != row["score"] for v in row["variants"].values())
    assert check["cases_checked"] == 1 and check["jitter_um"] == 40.0
