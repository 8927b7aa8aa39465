"""validate --calibrate on the DAB scorer's membrane levels: the defaults miss faint cases, a lower level finds them.

A lab's case list of synthetic tissue (a carcinoma nest beside stroma): three unstained cases (0),
three whose membranes are faint, below the scorer's default 1+ level (the lab's pathologists call
them 1+; the defaults say 0), two 2+ and one 3+. The calibration must lower the 1+ contrast, say
so, predict the faint cases 1+ by cross-validation, and ``score --dab-config`` must then score
them as predicted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.validation.helpers import cli_result as run
from tests.validation.helpers import read_case_rows, write_cases_csv, write_tissue_image
from wsi_her2_cli.errors import run_guarded
from wsi_her2_cli.main import cli

LAYOUT = [  # case, membrane OD, pathologist
    ("z0", 0.0, "0"),
    ("z1", 0.0, "0"),
    ("z2", 0.0, "0"),
    ("f0", 0.06, "1+"),
    ("f1", 0.06, "1+"),
    ("f2", 0.06, "1+"),
    ("m0", 0.25, "2+"),
    ("m1", 0.25, "2+"),
    ("i0", 0.5, "3+"),
]
QUICK = ("--mpp", "0.5", "--rerun", "0", "--roi-check", "0", "--bootstrap", "200", "--workers", "0", "-q")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The case list and its images (PNG, 0.5 µm/px)."""
    folder = tmp_path_factory.mktemp("levels-lab")
    for k, (case, od, _) in enumerate(LAYOUT):
        write_tissue_image(folder / f"{case}.png", od, seed=30 + k)
    write_cases_csv(
        folder / "cases.csv", ["case", "slide", "score"], [[case, f"{case}.png", score] for case, _, score in LAYOUT]
    )
    return folder


def _validate(lab: Path, out: Path, *extra: str) -> int:
    return run_guarded(cli, [str(a) for a in ("validate", lab / "cases.csv", "-o", out, *extra, *QUICK)])


@pytest.fixture(scope="module")
def calibrated(lab: Path) -> Path:
    """validate --calibrate (the DAB scorer's default space: the membrane levels)."""
    out = lab / "out"
    assert _validate(lab, out, "--calibrate") == 0
    return out


def test_the_defaults_miss_the_faint_cases_and_a_lower_1plus_level_finds_them(calibrated: Path) -> None:
    data = json.loads((calibrated / "calibration.json").read_text())
    prov = data["calibration"]
    assert prov["space"] == "dab_membrane_levels" and prov["method"] == "leave-one-out" and data["aggregate"] == {}
    assert list(prov["departs_from"]) == ["membrane_od_1plus"]
    assert data["dab"]["membrane_od_1plus"] < 0.045
    assert (data["dab"]["membrane_od_2plus"], data["dab"]["membrane_od_3plus"]) == (0.115, 0.285)
    assert prov["defaults_on_these_cases"]["exact_agreement"]["value"] == pytest.approx(6 / 9)
    assert prov["cross_validated"]["exact_agreement"]["value"] == 1.0
    assert any("membrane levels depart" in w for w in prov["warnings"])
    rows = read_case_rows(calibrated)
    for case in ("f0", "f1", "f2"):
        assert (rows[case]["tool_score"], rows[case]["cv_score"], rows[case]["calibrated_score"]) == ("0", "1+", "1+")
    assert all(rows[c]["cv_score"] == rows[c]["pathologist_score"] for c in rows)


def test_the_report_gives_the_cross_validated_and_the_defaults_agreement(calibrated: Path) -> None:
    summary = json.loads((calibrated / "validation.json").read_text())["calibration"]
    assert summary["requested"] == "levels" and list(summary["spaces"]) == ["dab_membrane_levels"]
    entry = summary["spaces"]["dab_membrane_levels"]
    assert entry["cross_validated"]["quadratic_weighted_kappa"]["value"] == pytest.approx(1.0)
    assert entry["defaults_on_these_cases"]["exact_agreement"]["value"] == pytest.approx(6 / 9)
    assert entry["n_candidates"] > 300 and summary["overrides"]["dab"] == summary["fitted"]
    page = (calibrated / "validation.html").read_text()
    assert "Each space on the same cases" in page and "membrane_od_1plus 0.045 →" in page


def test_score_with_the_calibration_scores_as_the_cross_validation_predicted(
    capsys: pytest.CaptureFixture[str], lab: Path, calibrated: Path, tmp_path: Path
) -> None:
    path = calibrated / "calibration.json"
    rows = read_case_rows(calibrated)
    for case in ("f1", "z0", "m0"):
        out = tmp_path / case
        result = run(capsys, "score", lab / f"{case}.png", "--mpp", "0.5", "--dab-config", path, "-o", out,
                     "--workers", "0", "-q")  # fmt: skip
        assert result.exit_code == 0, result.stderr
        report = json.loads((out / "report.json").read_text())
        assert report["result"]["score"] == rows[case]["cv_score"] == rows[case]["calibrated_score"], case
        assert (
            report["config"]["settings_fingerprint"]
            != json.loads((calibrated / "cases" / case / "report.json").read_text())["config"]["settings_fingerprint"]
        )
        block = report["calibration"]
        assert block["overrides"] == {"dab": json.loads(path.read_text())["dab"]}
        assert block["provenance"]["space"] == "dab_membrane_levels"
        assert report["model_card"]["config"]["membrane_od_1plus"] == block["overrides"]["dab"]["membrane_od_1plus"]
    new = write_tissue_image(tmp_path / "new.png", 0.06, seed=99)  # a faint case the fit never saw
    for args, expected in (((), "0"), (("--dab-config", path), "1+")):
        out = tmp_path / f"new{len(args)}"
        assert run(capsys, "score", new, "--mpp", "0.5", "-o", out, "--workers", "0", "-q", *args).exit_code == 0
        assert json.loads((out / "report.json").read_text())["result"]["score"] == expected


def test_calibrate_both_reports_each_space_and_moves_the_one_that_helps(lab: Path, tmp_path: Path) -> None:
    out = tmp_path / "both"
    assert _validate(lab, out, "--calibrate", "both") == 0
    summary = json.loads((out / "validation.json").read_text())["calibration"]
    spaces = summary["spaces"]
    assert set(spaces) == {"dab_membrane_levels_or_asco_cap_percentages", "dab_membrane_levels",
                           "asco_cap_percentages"}  # fmt: skip
    cut_offs = spaces["asco_cap_percentages"]
    # No cut-off makes 1+ of cells that show no 1+ staining: the percentages cannot help here.
    assert cut_offs["cross_validated"]["exact_agreement"]["value"] == pytest.approx(6 / 9)
    assert cut_offs["defaults_on_these_cases"]["exact_agreement"]["value"] == pytest.approx(6 / 9)
    assert spaces["dab_membrane_levels"]["cross_validated"]["exact_agreement"]["value"] == 1.0
    assert summary["cross_validated"]["exact_agreement"]["value"] == 1.0
    data = json.loads((out / "calibration.json").read_text())
    assert data["dab"]["membrane_od_1plus"] < 0.045
    assert data["aggregate"] == {"positive_3plus": 0.1, "equivocal_2plus": 0.1, "low_1plus": 0.1}
    assert set(data["calibration"]["spaces_compared"]) == {"dab_membrane_levels", "asco_cap_percentages"}


def test_an_unknown_space_is_a_bad_option(capsys: pytest.CaptureFixture[str], lab: Path, tmp_path: Path) -> None:
    result = run(capsys, "validate", lab / "cases.csv", "-o", tmp_path / "out", "--calibrate", "thresholds")
    assert result.exit_code == 2 and "thresholds" in result.stderr and not (tmp_path / "out").exists()


def test_a_calibration_made_over_another_keeps_what_the_new_fit_does_not_replace(lab: Path, tmp_path: Path) -> None:
    first = tmp_path / "cut-offs.toml"
    first.write_text("[aggregate]\nlow_1plus = 0.2\n")
    out = tmp_path / "over"
    assert _validate(lab, out, "--calibrate", "--dab-config", first) == 0
    data = json.loads((out / "calibration.json").read_text())
    assert data["aggregate"] == {"low_1plus": 0.2} and data["dab"]["membrane_od_1plus"] < 0.045
    assert data["calibration"]["based_on"]["file"] == str(first.resolve())
    report = json.loads((out / "cases" / "f0" / "report.json").read_text())
    assert report["calibration"]["overrides"] == {"aggregate": {"low_1plus": 0.2}}
    assert report["config"]["aggregate"]["low_1plus"] == 0.2
