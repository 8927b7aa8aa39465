from __future__ import annotations

import json

from tests.conftest import fixture_path


def test_info_json_lists_levels_mpp_and_associated_images(run_cli) -> None:
    result = run_cli("info", fixture_path("slides", "hamamatsu-fluorescence-dapi.ndpi"), "--json")
    assert result.exit_code == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["vendor"] == "hamamatsu" and facts["backend"] == "openslide"
    assert len(facts["levels"]) == 7 and facts["levels"][3]["downsample"] == 8.0
    assert facts["objective_power"] == 40 and facts["associated_images"] == ["macro"]
    assert facts["coordinate_space"] == "level-0 pixels"


def test_info_table_says_when_mpp_is_missing(run_cli) -> None:
    result = run_cli("info", fixture_path("slides", "aperio-tcga-jpeg2000-2levels.svs"))
    assert result.exit_code == 0
    assert "--mpp" in result.stdout


def test_info_on_a_missing_file_is_one_line_and_exit_3(run_cli, tmp_path) -> None:
    result = run_cli("info", tmp_path / "missing.svs")
    assert result.exit_code == 3
    assert result.stderr.strip().count("\n") == 0 and "not found" in result.stderr
    assert "Traceback" not in result.stderr
