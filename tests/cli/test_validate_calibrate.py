"""wsi-her2 validate --calibrate end to end, and --dab-config in score, batch and explain dab."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.validation.helpers import cli_result as run
from tests.validation.helpers import read_case_rows, write_case_image, write_cases_csv
from wsi_her2_cli.errors import run_guarded
from wsi_her2_cli.main import cli


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Path]]:
    """validate --calibrate percentages on nine synthetic cases whose 1+ tumours are 6% faint: 10% calls them 0.

    (Their faint membranes are well above the 1+ level: no membrane level can help; the cut-off does.
    The membrane levels are calibrated in tests/cli/test_validate_levels.py.)
    """
    folder = tmp_path_factory.mktemp("calibration-cases")
    layout = [
        ("z0", "0", "0"),
        ("z1", "0", "0"),
        ("z2", "0", "0"),
        ("f0", "faint6", "1+"),
        ("f1", "faint6", "1+"),
        ("f2", "faint6", "1+"),
        ("m0", "2+", "2+"),
        ("m1", "2+", "2+"),
        ("i0", "3+", "3+"),
    ]
    images = {
        case: write_case_image(folder / f"{case}.png", pattern, seed=10 + k)
        for k, (case, pattern, _) in enumerate(layout)
    }
    cases = write_cases_csv(
        folder / "cases.csv", ["case", "slide", "score"], [[case, f"{case}.png", score] for case, _, score in layout]
    )
    out = folder / "out"
    code = run_guarded(
        cli,
        [
            str(a)
            for a in (
                "validate",
                cases,
                "-o",
                out,
                "--calibrate",
                "percentages",
                "--mpp",
                "0.5",
                "--rerun",
                "0",
                "--roi-check",
                "0",
                "--bootstrap",
                "200",
                "--workers",
                "0",
                "-q",
            )
        ],
    )
    assert code == 0
    return out, out / "calibration.json", images


def test_calibration_finds_the_cut_off_that_separates_the_faint_cases(calibrated: tuple[Path, Path, dict]) -> None:
    from wsi_her2.validation.spaces import PERCENTAGE_GRID

    out, path, _ = calibrated
    data = json.loads(path.read_text())

    def positive_fraction(case: str) -> float:
        counts = json.loads((out / "cases" / case / "report.json").read_text())["result"]["cell_counts"]
        return (counts["1+"] + counts["2+"] + counts["3+"]) / sum(counts.values())

    lowest_faint = min(positive_fraction(c) for c in ("f0", "f1", "f2"))
    highest_zero = max(positive_fraction(c) for c in ("z0", "z1", "z2"))
    separating = [g for g in PERCENTAGE_GRID["low_1plus"] if highest_zero <= g < lowest_faint]
    assert separating, f"the synthetic cases should be separable ({highest_zero:.3f} vs {lowest_faint:.3f})"
    assert data["aggregate"] == {"low_1plus": max(separating), "equivocal_2plus": 0.1, "positive_3plus": 0.1}
    prov = data["calibration"]
    assert list(prov["departs_from"]) == ["low_1plus"] and prov["method"] == "leave-one-out"
    assert len(prov["folds"]) == 9 and all(len(f["held_out"]) == 1 for f in prov["folds"])
    assert prov["cross_validated"]["exact_agreement"]["value"] == 1.0
    assert prov["defaults_on_these_cases"]["exact_agreement"]["value"] == pytest.approx(6 / 9)
    assert "optimistic" in prov["fitted_on_all_cases"]["label"]


def test_the_calibration_file_records_the_cases_by_hash(calibrated: tuple[Path, Path, dict]) -> None:
    import hashlib

    _, path, images = calibrated
    prov = json.loads(path.read_text())["calibration"]
    recorded = {c["case"]: c["sha256"] for c in prov["cases"]}
    assert recorded == {case: hashlib.sha256(p.read_bytes()).hexdigest() for case, p in images.items()}
    assert prov["wsi_her2_version"] and prov["created"] and prov["model"]["kind"] == "dab"


def test_the_validation_report_shows_cross_validated_and_default_scores(calibrated: tuple[Path, Path, dict]) -> None:
    out, _, _ = calibrated
    rows = read_case_rows(out)
    assert rows["f0"]["tool_score"] == "0" and rows["f0"]["cv_score"] == "1+"
    summary = json.loads((out / "validation.json").read_text())["calibration"]
    assert summary["cross_validated"]["quadratic_weighted_kappa"]["value"] == pytest.approx(1.0)
    assert "cross-validated (the agreement to expect)" in (out / "validation.html").read_text()


def test_score_with_the_calibration_applies_it_and_the_report_says_so(
    capsys: pytest.CaptureFixture[str], calibrated: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    import hashlib

    _, path, images = calibrated
    out = tmp_path / "score"
    result = run(capsys, "score", images["f1"], "--mpp", "0.5", "--dab-config", path, "-o", out, "--workers", "0")
    assert result.exit_code == 0, result.stderr
    assert "calibrated by" in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["result"]["score"] == "1+"  # 0 with the defaults (see the validation above)
    block = report["calibration"]
    assert block["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert block["provenance"]["case_ids"] == ["z0", "z1", "z2", "f0", "f1", "f2", "m0", "m1", "i0"]
    assert block["overrides"]["aggregate"]["low_1plus"] < 0.1
    assert report["config"]["aggregate"]["low_1plus"] == block["overrides"]["aggregate"]["low_1plus"]


def test_batch_applies_the_calibration_to_every_slide(
    capsys: pytest.CaptureFixture[str], calibrated: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    _, path, images = calibrated
    slides = tmp_path / "slides"
    slides.mkdir()
    os.symlink(images["f2"], slides / "f2.png")
    out = tmp_path / "batch"
    result = run(capsys, "batch", slides, "-o", out, "--mpp", "0.5", "--dab-config", path, "--workers", "0", "-q")
    assert result.exit_code == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    row = next(r for r in summary["slides"] if r["slide"] == "f2.png")
    assert row["score"] == "1+"
    assert json.loads((out / "f2.png" / "report.json").read_text())["calibration"]["file"] == str(path.resolve())


def test_explain_dab_applies_the_dab_section_of_a_settings_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    patch = write_case_image(tmp_path / "patch.png", "1+", size_px=512, margin_px=0)
    plain, strict = tmp_path / "plain", tmp_path / "strict"
    assert run(capsys, "explain", "dab", patch, "--mpp", "0.5", "--mode", "patch", "-o", plain, "-q").exit_code == 0
    (tmp_path / "strict.toml").write_text(
        "[dab]\nmembrane_od_1plus = 0.5\nmembrane_od_2plus = 0.6\nmembrane_od_3plus = 0.7\n"
    )
    result = run(
        capsys,
        "explain",
        "dab",
        patch,
        "--mpp",
        "0.5",
        "--mode",
        "patch",
        "-o",
        strict,
        "-q",
        "--dab-config",
        tmp_path / "strict.toml",
    )
    assert result.exit_code == 0, result.stderr
    before = json.loads((plain / "explanation.json").read_text())
    after = json.loads((strict / "explanation.json").read_text())
    assert before["patch_class"] == "1+" and after["patch_class"] == "0"  # faint membranes no longer count
    assert before["calibration"] is None and after["calibration"]["overrides"]["dab"]["membrane_od_1plus"] == 0.5


def test_a_calibration_is_refused_with_a_trained_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "cal.toml").write_text("[aggregate]\nlow_1plus = 0.05\n")
    result = run(
        capsys,
        "score",
        tmp_path / "x.svs",
        "--model",
        tmp_path / "ckpt",
        "--dab-config",
        tmp_path / "cal.toml",
        "-o",
        tmp_path / "out",
    )
    assert result.exit_code == 2 and "tunes the DAB scorer" in result.stderr
