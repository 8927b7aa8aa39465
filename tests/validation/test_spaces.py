"""The percentage space rescores a score folder exactly as ``score`` scored it, and moves with its cut-offs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wsi_her2.aggregate import AggregateConfig
from wsi_her2.errors import DatasetError
from wsi_her2.her2 import SCORES_4
from wsi_her2.validation.spaces import PERCENTAGE_GRID, PercentageSpace


def test_rescoring_at_the_defaults_reproduces_every_reported_score(scored: dict[str, Path]) -> None:
    space = PercentageSpace()
    for pattern, folder in scored.items():
        data = space.load_case(folder)
        report = json.loads((folder / "report.json").read_text())
        assert data.counts.tolist() == [report["result"]["cell_counts"][c] for c in SCORES_4], pattern
        assert space.rescore(data, space.defaults())[0] == SCORES_4.index(report["result"]["score"])
    assert [SCORES_4[space.load_case(scored[p]).reported_score] for p in ("0", "1+", "2+", "3+")] == list(SCORES_4)


def test_a_lower_1plus_cut_off_turns_a_six_percent_faint_case_into_1plus(scored: dict[str, Path]) -> None:
    space = PercentageSpace()
    data = space.load_case(scored["faint6"])
    faint = data.counts[1:].sum() / data.counts.sum()
    assert 0.03 < faint < 0.10, f"the pattern should be about 6% faint cells, got {faint:.1%}"
    assert space.rescore(data, space.defaults())[0] == 0
    assert space.rescore(data, {**space.defaults(), "low_1plus": 0.03})[0] == 1
    zero = space.load_case(scored["0"])
    assert space.rescore(zero, {**space.defaults(), "low_1plus": 0.01})[0] == 0


def test_candidates_are_the_grid_with_the_defaults_first_and_start_from_the_settings_used() -> None:
    space = PercentageSpace(AggregateConfig(low_1plus=0.04))
    candidates = space.candidates()
    assert candidates[0] == {"low_1plus": 0.04, "equivocal_2plus": 0.1, "positive_3plus": 0.1}
    n_grid = (
        len(PERCENTAGE_GRID["low_1plus"])
        * len(PERCENTAGE_GRID["equivocal_2plus"])
        * len(PERCENTAGE_GRID["positive_3plus"])
    )
    assert len(candidates) == n_grid + 1  # 0.04 is not on the grid
    assert len({tuple(sorted(c.items())) for c in candidates}) == len(candidates)


def test_a_folder_scored_by_another_rule_is_refused(scored: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "other"
    folder.mkdir()
    report = json.loads((scored["1+"] / "report.json").read_text())
    report["result"]["rule"] = "asco_cap"
    (folder / "report.json").write_text(json.dumps(report))
    with pytest.raises(DatasetError, match="cells rule"):
        PercentageSpace().load_case(folder)


def test_a_folder_that_does_not_rescore_to_its_report_is_caught(scored: dict[str, Path]) -> None:
    space = PercentageSpace()
    data = space.load_case(scored["faint6"])
    with pytest.raises(DatasetError, match="does not reproduce"):
        PercentageSpace(AggregateConfig(low_1plus=0.02)).check_reproduces([data], ["faint6"])
