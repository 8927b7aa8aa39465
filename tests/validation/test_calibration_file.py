"""Calibration files: what they may hold, and the block every report made with one carries."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from wsi_her2.errors import ConfigError, InputNotFoundError
from wsi_her2.settings import ScoreSettings
from wsi_her2.validation.calibration_file import FORMAT, check_applies_to, load_dab_config, sha256_file


def test_a_hand_written_toml_applies_its_sections_and_says_it_has_no_provenance(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text("[dab]\nmembrane_od_1plus = 0.06\n\n[aggregate]\nlow_1plus = 0.05\n")
    sections, block = load_dab_config(path)
    assert sections == {"dab": {"membrane_od_1plus": 0.06}, "aggregate": {"low_1plus": 0.05}}
    assert block["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert block["overrides"] == sections and block["provenance"] is None and "hand-written" in block["note"]


def test_a_calibration_file_reports_its_provenance_summary(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    provenance = {
        "created": "2026-01-01T00:00:00+00:00",
        "method": "leave-one-out",
        "n_cases": 2,
        "cases": [{"case": "a", "sha256": "1" * 64}, {"case": "b", "sha256": "2" * 64}],
        "cross_validated": {
            "n": 2,
            "exact_agreement": {"value": 0.5},
            "quadratic_weighted_kappa": {"value": 0.4},
            "confusion_matrix": [[1]],
        },
        "departs_from": {"low_1plus": {"default": 0.1, "calibrated": 0.03}},
        "folds": [{"fold": 0}],
    }
    path.write_text(
        json.dumps({"format": FORMAT, "dab": {}, "aggregate": {"low_1plus": 0.03}, "calibration": provenance})
    )
    sections, block = load_dab_config(path)
    assert sections["aggregate"] == {"low_1plus": 0.03} and block["overrides"] == {"aggregate": {"low_1plus": 0.03}}
    summary = block["provenance"]
    assert summary["case_ids"] == ["a", "b"] and "folds" not in summary
    assert summary["cross_validated"] == {"n": 2, "exact_agreement": 0.5, "quadratic_weighted_kappa": 0.4}
    assert summary["departs_from"] == provenance["departs_from"]


@pytest.mark.parametrize(
    ("name", "text", "phrase"),
    [
        ("bad.toml", "[tissue]\nclose_um = 2\n", r"section\(s\) tissue do not belong"),
        ("bad.json", '{"format": "other/9", "dab": {}}', "unknown calibration format"),
        ("bad.json", '{"dab": {}, "grid": {"tile_size_px": 64}}', r"section\(s\) grid do not belong"),
        ("bad.json", "[1, 2]", "must hold a mapping"),
        ("bad.toml", "[dab\n", "cannot parse"),
        ("bad.json", '{"dab": ', "cannot parse"),
    ],
)
def test_files_that_are_not_dab_settings_are_refused(tmp_path: Path, name: str, text: str, phrase: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=phrase):
        load_dab_config(path)


def test_a_missing_file_and_a_trained_model_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="--dab-config file not found"):
        load_dab_config(tmp_path / "absent.json")
    with pytest.raises(ConfigError, match="tunes the DAB scorer"):
        check_applies_to("runs/convnext")
    check_applies_to("dab")


def test_the_settings_fingerprint_follows_the_calibration_file(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text("[aggregate]\nlow_1plus = 0.05\n")
    sections, block = load_dab_config(path)
    plain = ScoreSettings()
    calibrated = ScoreSettings.from_sections(sections, calibration=block)
    assert calibrated.aggregate.low_1plus == 0.05
    assert calibrated.fingerprint() != plain.fingerprint()
    assert plain.fingerprint() == ScoreSettings.from_sections({}).fingerprint()  # uncalibrated stays as it was
    path.write_text("[aggregate]\nlow_1plus = 0.05\n# refitted\n")
    _, changed = load_dab_config(path)
    assert ScoreSettings.from_sections(sections, calibration=changed).fingerprint() != calibrated.fingerprint()


def test_sha256_of_a_dicom_folder_covers_names_and_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(b"one")
    first = sha256_file(folder)
    (folder / "a.dcm").rename(folder / "b.dcm")
    assert sha256_file(folder) != first
