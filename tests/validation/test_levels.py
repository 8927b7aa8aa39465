"""The membrane-level space rescores a case from its cells exactly as ``score`` scores it, at any contrasts."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from wsi_her2.aggregate import AggregateConfig
from wsi_her2.config import LoaderConfig
from wsi_her2.errors import DatasetError
from wsi_her2.her2 import SCORES_4
from wsi_her2.models.dab import DabConfig
from wsi_her2.settings import ScoreSettings
from wsi_her2.validation.calibration import CalibrationSpace, cross_validate
from wsi_her2.validation.levels import LEVEL_KEYS, LEVEL_STEPS, LevelSpace
from wsi_her2.validation.spaces import EitherSpace, PercentageSpace


def _reported(folder: Path) -> tuple[int, list[int], float | None]:
    result = json.loads((folder / "report.json").read_text())["result"]
    summary = result["scorer_summary"]
    counts = [summary["tumour_cells"]["counts"][c] for c in SCORES_4]
    assert counts == [result["cell_counts"][c] for c in SCORES_4]  # the cells rule's counts are the tumour cells
    return SCORES_4.index(result["score"]), counts, summary["membrane_index"]


def test_rescoring_at_the_defaults_reproduces_every_case_exactly(
    scored: dict[str, Path], tissue_scored: dict[float, Path], restained_scored: Path
) -> None:
    space = LevelSpace()
    folders = {**scored, **{f"tissue {od}": f for od, f in tissue_scored.items()}, "restained core": restained_scored}
    data = [space.load_case(folder) for folder in folders.values()]
    space.check_reproduces(data, list(folders))
    for (name, folder), case in zip(folders.items(), data, strict=True):
        score, counts, index = _reported(folder)
        rescored, rescored_index = space.rescore(case, space.defaults())
        assert rescored == score and space.counts(case, space.defaults()).tolist() == counts, name
        assert (rescored_index if np.isfinite(rescored_index) else None) == index, name  # the same float
    assert sum(sum(_reported(f)[1]) for f in folders.values()) > 1000


def test_rescoring_under_other_contrasts_is_what_score_gives_with_them(restained_scored: Path, tmp_path: Path) -> None:
    from wsi_her2.pipeline import run_score

    space = LevelSpace()
    case = space.load_case(restained_scored)
    slide = Path(json.loads((restained_scored / "report.json").read_text())["slide"]["path"])
    for k, params in enumerate(
        (
            {"membrane_od_1plus": 0.03, "membrane_od_2plus": 0.085, "membrane_od_3plus": 0.245},
            {"membrane_od_1plus": 0.06, "membrane_od_2plus": 0.13, "membrane_od_3plus": 0.325},
        )
    ):
        folder = tmp_path / f"score-{k}"
        run_score(slide, folder, ScoreSettings(loader=LoaderConfig(workers=0), dab=DabConfig(**params)), mpp=0.25)
        score, counts, index = _reported(folder)
        assert space.rescore(case, params) == (score, pytest.approx(index, abs=0))
        assert space.counts(case, params).tolist() == counts
        LevelSpace(DabConfig(**params)).check_reproduces([LevelSpace().load_case(folder)], ["other contrasts"])
    lower, higher = space.counts(case, {"membrane_od_1plus": 0.03, "membrane_od_2plus": 0.085,
                                        "membrane_od_3plus": 0.245}), space.counts(case, space.defaults())  # fmt: skip
    assert lower[1:].sum() > higher[1:].sum() and lower[2] > higher[2]  # lower levels: more stained cells


def test_a_lower_1plus_contrast_finds_faint_membranes_and_no_contrast_stains_unstained_ones(
    tissue_scored: dict[float, Path],
) -> None:
    space = LevelSpace()
    faint, unstained = space.load_case(tissue_scored[0.06]), space.load_case(tissue_scored[0.0])
    assert space.rescore(faint, space.defaults())[0] == 0  # below the default 1+ level
    assert space.rescore(faint, {**space.defaults(), "membrane_od_1plus": 0.035})[0] == 1
    lowest = min(c["membrane_od_1plus"] for c in space.candidates())
    assert space.rescore(unstained, {**space.defaults(), "membrane_od_1plus": lowest}) == (0, 0.0)
    levels = space.levels(faint, space.defaults())
    assert levels.od_1plus == pytest.approx(faint.background_od + faint.factor * 0.045)


def test_candidates_keep_1plus_below_2plus_below_3plus_around_the_settings_in_fine_steps() -> None:
    space = LevelSpace()
    candidates = space.candidates()
    assert candidates[0] == {"membrane_od_1plus": 0.045, "membrane_od_2plus": 0.115, "membrane_od_3plus": 0.285}
    assert all(c["membrane_od_1plus"] < c["membrane_od_2plus"] < c["membrane_od_3plus"] for c in candidates)
    assert len({tuple(c.values()) for c in candidates}) == len(candidates) < 500
    ones = sorted({c["membrane_od_1plus"] for c in candidates})
    assert ones[0] == pytest.approx(0.015) and ones[-1] == pytest.approx(0.075)
    assert np.diff(ones) == pytest.approx(np.full(len(ones) - 1, LEVEL_STEPS["membrane_od_1plus"][0]))
    for key in LEVEL_KEYS:  # centred: as many steps below the setting as above
        values = sorted({c[key] for c in candidates})
        assert values.index(space.defaults()[key]) == LEVEL_STEPS[key][1]
    tuned = LevelSpace(DabConfig(membrane_od_1plus=0.02, membrane_od_2plus=0.1, membrane_od_3plus=0.2))
    assert tuned.candidates()[0]["membrane_od_1plus"] == 0.02
    assert min(c["membrane_od_1plus"] for c in tuned.candidates()) > 0


def test_a_folder_scored_with_other_contrasts_or_another_rule_is_refused(
    tissue_scored: dict[float, Path], tmp_path: Path
) -> None:
    case = LevelSpace().load_case(tissue_scored[0.06])
    other = LevelSpace(DabConfig(membrane_od_1plus=0.03))
    with pytest.raises(DatasetError, match="does not reproduce"):
        other.check_reproduces([case], ["faint"])
    folder = tmp_path / "other-rule"
    shutil.copytree(tissue_scored[0.06], folder)
    report = json.loads((folder / "report.json").read_text())
    report["result"]["rule"] = "asco_cap"
    (folder / "report.json").write_text(json.dumps(report))
    with pytest.raises(DatasetError, match="cells rule"):
        LevelSpace().load_case(folder)


def test_either_space_moves_one_space_at_a_time_and_rescores_with_it(tissue_scored: dict[float, Path]) -> None:
    levels, cut_offs = LevelSpace(), PercentageSpace()
    both = EitherSpace([levels, cut_offs])
    assert isinstance(levels, CalibrationSpace) and isinstance(both, CalibrationSpace)
    candidates = both.candidates()
    assert candidates[0] == {**levels.defaults(), **cut_offs.defaults()}
    assert len(candidates) == len(levels.candidates()) + len(cut_offs.candidates()) - 1
    data = both.load_case(tissue_scored[0.06])
    lower = {**candidates[0], "membrane_od_1plus": 0.035}
    assert both.rescore(data, lower) == levels.rescore(data[0], {k: lower[k] for k in LEVEL_KEYS})
    stricter = {**candidates[0], "low_1plus": 0.01}
    assert both.rescore(data, stricter)[0] == cut_offs.rescore(data[1], {**cut_offs.defaults(), "low_1plus": 0.01})[0]
    with pytest.raises(ValueError, match="one space"):
        both.rescore(data, {**lower, "low_1plus": 0.01})
    assert both.overrides(lower) == {"dab": {k: lower[k] for k in LEVEL_KEYS}, "aggregate": cut_offs.defaults()}


def test_cross_validating_the_levels_writes_the_dab_section(tissue_scored: dict[float, Path]) -> None:
    space = LevelSpace()
    faint, zero = space.load_case(tissue_scored[0.06]), space.load_case(tissue_scored[0.0])
    data, truth = [faint, zero, faint, zero, faint], [1, 0, 1, 0, 1]
    cv = cross_validate(space, data, truth, list("abcde"), bootstrap_samples=100)
    assert set(cv.overrides) == {"dab"} and cv.overrides["dab"] == cv.fitted
    assert list(cv.departs_from) == ["membrane_od_1plus"] and cv.fitted["membrane_od_1plus"] < 0.045
    assert cv.metrics["cross_validated"]["exact_agreement"]["value"] == 1.0
    assert cv.metrics["defaults"]["exact_agreement"]["value"] == pytest.approx(2 / 5)
    assert cv.n_candidates == len(space.candidates())


def test_the_cut_offs_the_case_was_scored_with_are_the_ones_rescored_with(tissue_scored: dict[float, Path]) -> None:
    space = LevelSpace()
    case = space.load_case(tissue_scored[0.06])
    assert case.aggregate == AggregateConfig()
    lower = {**space.defaults(), "membrane_od_1plus": 0.035}
    assert space.rescore(case, lower)[0] == 1  # every tumour cell faint: more than 10%
    strict = dataclasses.replace(case, aggregate=AggregateConfig(low_1plus=1.0))
    assert space.rescore(strict, lower)[0] == 0  # not more than 100%
