"""wsi-her2 validate end to end: real cores and synthetic cases, the CAP checks, bad case lists, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import Result
from tests.conftest import fixture_path
from tests.validation.helpers import cli_result as run
from tests.validation.helpers import read_case_rows, write_case_image, write_cases_csv, write_square_roi
from wsi_her2_cli.errors import run_guarded
from wsi_her2_cli.main import cli

SCORE_OUTPUTS = {"report.json", "heatmap.zarr", "tiles.csv", "predictions.geojson", "overlay.png"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lab's case list: the two real cores (absolute paths) and synthetic cases beside the CSV."""
    import numpy as np

    from wsi_her2.synthetic import write_synthetic_slide

    folder = tmp_path_factory.mktemp("lab")
    core0, core2 = fixture_path("ihc", "her2-tma-core-score0.jpg"), fixture_path("ihc", "her2-tma-core-score2plus.jpg")
    (folder / "slides").mkdir()
    write_synthetic_slide(
        folder / "slides" / "syn.svs",
        width=2048,
        height=2048,
        mpp=0.5,
        stain="ihc",
        tissue_map=np.ones((4, 4), bool),
        seed=5,
    )
    write_square_roi(folder / "slides" / "syn-roi.geojson", 256, 256, 1792, 1792)
    for name, pattern, seed in (("s0", "0", 1), ("s1", "1+", 2), ("s2", "2+", 3), ("s1b", "1+", 4)):
        write_case_image(folder / "slides" / f"{name}.png", pattern, seed=seed)
    write_cases_csv(
        folder / "cases.csv",
        ["Case", "Slide", "Pathologist score", "ISH", "mpp", "ROI"],
        [
            ["core0", core0, "0", "negative", 0.25, None],
            ["core2", core2, "2+ ", "positive", 0.25, None],
            ["syn", "slides/syn.svs", "3+", "amplified", None, "slides/syn-roi.geojson"],
            ["s0", "slides/s0.png", "0", None, 0.5, None],
            ["s1", "slides/s1.png", "1", "negative", 0.5, None],
            ["s2", "slides/s2.png", "1+", "not amplified", 0.5, None],  # the tool calls it 2+
            ["s1b", "slides/s1b.png", "0", "negative", 0.5, None],  # the tool calls it 1+
        ],
    )
    return folder


@pytest.fixture(scope="module")
def validated(lab: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    """validate on the lab's cases; seed 36 reruns a real core and the ROI case, and ROI-checks the ROI case.

    (The ROI check of a case without an ROI, on its tissue outline, is tested in tests/validation.)
    """
    out = tmp_path_factory.mktemp("validated") / "out"
    code = run_guarded(
        cli,
        [
            str(a)
            for a in (
                "validate",
                lab / "cases.csv",
                "-o",
                out,
                "--rerun",
                "2",
                "--roi-check",
                "1",
                "--seed",
                "36",
                "--bootstrap",
                "200",
                "--workers",
                "2",
                "-q",
            )
        ],
    )
    return out, Result(code, "", "")


def test_validate_writes_every_output_with_the_report_last(validated: tuple[Path, Result]) -> None:
    out, result = validated
    assert result.exit_code == 0
    names = {p.name for p in out.iterdir()}
    assert {"validation.json", "validation.html", "validation.png", "cases.csv", "cases", "checks"} <= names
    report_time = (out / "validation.json").stat().st_mtime_ns
    assert all(p.stat().st_mtime_ns <= report_time for p in out.rglob("*") if p.is_file())
    assert not [p for p in out.rglob(".tmp-*")], "a temporary file was left behind"
    for case in ("core0", "core2", "syn", "s0", "s1", "s2", "s1b"):
        assert {p.name for p in (out / "cases" / case).iterdir()} >= SCORE_OUTPUTS


def test_case_folders_are_score_folders_the_viewer_opens(validated: tuple[Path, Result]) -> None:
    from wsi_her2.viewer.result import load_result

    out, _ = validated
    folder = load_result(out / "cases" / "core2")
    assert folder.report["result"]["score"] == "2+"


def test_the_real_cores_keep_the_pathologists_scores(validated: tuple[Path, Result]) -> None:
    rows = read_case_rows(validated[0])
    assert (rows["core0"]["tool_score"], rows["core2"]["tool_score"]) == ("0", "2+")
    assert rows["core0"]["agree"] == rows["core2"]["agree"] == "true"
    assert int(rows["core2"]["n_cells"]) > 1000 and rows["core2"]["index_source"] == "membrane_index"


def test_the_index_and_tumour_cells_are_the_dab_scorers_own(validated: tuple[Path, Result]) -> None:
    out, _ = validated
    for case, row in read_case_rows(out).items():
        summary = json.loads((out / "cases" / case / "report.json").read_text())["result"]["scorer_summary"]
        assert float(row["index"]) == pytest.approx(summary["membrane_index"], rel=1e-5), case
        assert int(row["n_tumour_cells"]) == summary["n_tumour_cells"] <= int(row["n_cells"]), case
        assert int(row["n_cells"]) == summary["n_cells_detected"], case
    rows = read_case_rows(out)
    assert int(rows["core2"]["n_tumour_cells"]) < int(rows["core2"]["n_cells"])  # the gate keeps out stroma


def test_agreement_figures_match_scikit_learn_and_scipy_on_the_case_table(validated: tuple[Path, Result]) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    out, _ = validated
    rows = list(read_case_rows(out).values())
    order = ["0", "1+", "2+", "3+"]
    truth = [order.index(r["pathologist_score"]) for r in rows]
    tool = [order.index(r["tool_score"]) for r in rows]
    assert tool == [0, 2, 3, 0, 1, 2, 1]  # as designed: two disagreements, one each way
    report = json.loads((out / "validation.json").read_text())
    c = report["concordance"]
    assert c["confusion_matrix"] == metrics.confusion_matrix(truth, tool, labels=[0, 1, 2, 3]).tolist()
    assert c["quadratic_weighted_kappa"]["value"] == pytest.approx(
        metrics.cohen_kappa_score(truth, tool, weights="quadratic", labels=[0, 1, 2, 3])
    )
    assert c["exact_agreement"]["value"] == pytest.approx(5 / 7)
    rho = stats.spearmanr([float(r["index"]) for r in rows], truth).statistic
    assert report["index_vs_pathologist_spearman"]["value"] == pytest.approx(rho, rel=1e-5)
    her2_low = c["splits"]["zero_vs_1plus_or_more"]
    assert her2_low["counts"] == {"true_positive": 4, "false_negative": 0, "false_positive": 1, "true_negative": 2}
    assert report["index"]["source"] == "membrane_index" and "over tumour cells" in report["index"]["description"]


def test_seven_cases_are_too_few_for_bootstrap_intervals_and_the_report_says_so(validated: tuple[Path, Result]) -> None:
    report = json.loads((validated[0] / "validation.json").read_text())
    kappa = report["concordance"]["quadratic_weighted_kappa"]
    assert kappa["ci95"] is None and "too few cases" in kappa["note"]
    assert any("only 7 scored cases" in note for note in report["notes"])
    assert report["sample_size"]["meets_guideline_minimum"] is False


def test_ish_concordance_of_the_2plus_calls(validated: tuple[Path, Result]) -> None:
    ish = json.loads((validated[0] / "validation.json").read_text())["ish"]
    assert ish["cases_with_ish"] == 6
    assert ish["two_plus_calls"]["tool"]["ish_positive"] == 1 and ish["two_plus_calls"]["tool"]["ish_negative"] == 1
    assert ish["two_plus_calls"]["pathologist"]["with_ish"] == 1
    assert ish["tool_vs_ish"]["ish_positive_called_0_or_1plus"] == 0


def test_reruns_are_identical_and_roi_changes_are_reported(validated: tuple[Path, Result]) -> None:
    out, _ = validated
    report = json.loads((out / "validation.json").read_text())
    rerun, roi = report["checks"]["rerun"], report["checks"]["roi"]
    assert rerun["cases_checked"] == 2 and rerun["passed"] and rerun["subset_seed"] == 36, rerun
    assert {r["case"] for r in rerun["per_case"]} == {"core2", "syn"}, "seed 36 should rerun a real core"
    assert (out / "checks" / "rerun" / "core2" / "report.json").is_file()
    (row,) = roi["per_case"]
    assert row["case"] == "syn" and row["outline"] == "roi"
    assert set(row["variants"]) == {"shrink_50um", "grow_50um", "shift_x_50um", "shift_y_50um"}
    for name, variant in row["variants"].items():
        assert variant["status"] == "done" and (out / variant["folder"] / "report.json").is_file()
        assert (out / "checks" / "roi" / "syn" / f"{name}.geojson").is_file()
    indices = [v["index"] for v in row["variants"].values()] + [row["index"]]
    assert row["index_spread"] == pytest.approx(max(indices) - min(indices))
    assert roi["cases_with_a_score_change"] == (["syn"] if row["score_changed"] else [])
    rows = read_case_rows(out)
    assert float(rows["syn"]["roi_index_spread"]) == pytest.approx(row["index_spread"], rel=1e-5)
    assert rows["core0"]["roi_index_spread"] == "" and rows["core2"]["rerun_identical"] == "true"


def test_the_algorithms_metadata_is_recorded(validated: tuple[Path, Result]) -> None:
    out, _ = validated
    report = json.loads((out / "validation.json").read_text())
    case_report = json.loads((out / "cases" / "s1" / "report.json").read_text())
    algorithm = report["algorithm"]
    assert algorithm["model"]["kind"] == "dab" and algorithm["wsi_her2_version"] == report["wsi_her2_version"]
    assert algorithm["settings_fingerprint"] == case_report["config"]["settings_fingerprint"]
    assert algorithm["settings_fingerprints_seen"] == [algorithm["settings_fingerprint"]]
    assert algorithm["calibration"] is None and case_report["calibration"] is None


def test_the_html_page_is_self_contained(validated: tuple[Path, Result]) -> None:
    page = (validated[0] / "validation.html").read_text()
    assert "quadratic-weighted kappa" in page and 'src="data:image/png;base64,' in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert 'href="cases/core2/report.json"' in page


@pytest.mark.parametrize(
    ("header", "rows", "code", "phrase"),
    [
        (["slide", "ish"], [["s0.png", ""]], 11, "no pathologist_score column"),
        (["slide", "score", "mpp"], [["s0.png", "4+", "0.5"]], 11, "unknown pathologist score '4+'"),
        (["slide", "score", "mpp"], [["gone.png", "1+", "0.5"]], 3, "slide(s) not found: "),
        (["slide", "score", "mpp"], [["s0.png", "0", "0.5"], ["s0.png", "1+", "0.5"]], 11, "case id 's0' on lines"),
        (["slide", "score"], [["s0.png", "0"]], 5, "no µm/px"),
        (["slide", "score", "stain"], [["s0.png", "0", "HER2"]], 11, "unknown column(s) stain"),
        ([], [], 11, "is empty"),
    ],
)
def test_bad_case_lists_stop_with_one_line_before_anything_is_written(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    header: list[str],
    rows: list[list[str]],
    code: int,
    phrase: str,
) -> None:
    write_case_image(tmp_path / "s0.png", "0")
    path = tmp_path / "cases.csv"
    if header:
        write_cases_csv(path, header, rows)
    else:
        path.write_text("")
    out = tmp_path / "out"
    result = run(capsys, "validate", path, "-o", out)
    assert result.exit_code == code, result.stderr
    assert phrase in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("wsi-her2: error:") and not out.exists()


def test_a_missing_case_list_and_a_bad_dab_config_write_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert run(capsys, "validate", tmp_path / "absent.csv", "-o", out).exit_code == 3
    write_case_image(tmp_path / "s0.png", "0")
    cases = write_cases_csv(tmp_path / "cases.csv", ["slide", "score", "mpp"], [["s0.png", "0", "0.5"]])
    (tmp_path / "bad.toml").write_text("[grid]\ntile_size_px = 64\n")
    result = run(capsys, "validate", cases, "-o", out, "--dab-config", tmp_path / "bad.toml")
    assert result.exit_code == 2 and "do not belong in a --dab-config file" in result.stderr
    assert not out.exists()


def test_a_case_that_fails_is_recorded_and_the_run_goes_on(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write_case_image(tmp_path / "s1.png", "1+")
    he = fixture_path("he", "he-patch-1000px.png")
    cases = write_cases_csv(
        tmp_path / "cases.csv",
        ["case", "slide", "score", "mpp"],
        [["he", he, "0", "0.5"], ["s1", "s1.png", "1+", "0.5"]],
    )
    out = tmp_path / "out"
    result = run(capsys, "validate", cases, "-o", out, "--workers", "0", "--rerun", "0", "--roi-check", "0", "-q")
    assert result.exit_code == 12 and "1 of 2 cases could not be scored (he)" in result.stderr
    report = json.loads((out / "validation.json").read_text())
    assert report["n_scored"] == 1 and report["failed"][0]["case"] == "he" and "H&E" in report["failed"][0]["message"]
    assert not (out / "cases" / "he" / "report.json").exists()
    assert read_case_rows(out)["he"]["status"] == "failed" and read_case_rows(out)["s1"]["tool_score"] == "1+"


def test_a_calibration_that_cannot_be_made_keeps_the_validation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name, pattern in (("a", "0"), ("b", "1+")):
        write_case_image(tmp_path / f"{name}.png", pattern)
    cases = write_cases_csv(tmp_path / "cases.csv", ["slide", "score"], [["a.png", "0"], ["b.png", "1+"]])
    out = tmp_path / "out"
    args = ("validate", cases, "-o", out, "--calibrate", "--mpp", "0.5", "--rerun", "0", "--roi-check", "0")
    result = run(capsys, *args, "--workers", "0", "-q")
    assert result.exit_code == 11 and "calibration needs at least 4 scored cases" in result.stderr
    report = json.loads((out / "validation.json").read_text())
    assert report["n_scored"] == 2 and "at least 4" in report["calibration"]["error"]
    assert not (out / "calibration.json").exists()
    assert "Not made: calibration needs" in (out / "validation.html").read_text()


def test_every_case_folder_rescores_from_its_cells_to_its_reported_score(validated: tuple[Path, Result]) -> None:
    """The membrane-level calibration's premise, on the real cores and the ROI case: exact at the defaults."""
    from wsi_her2.validation.levels import LevelSpace

    out, _ = validated
    space = LevelSpace()
    cases = ["core0", "core2", "syn", "s0", "s1", "s2", "s1b"]
    data = [space.load_case(out / "cases" / case) for case in cases]
    space.check_reproduces(data, cases)  # levels, tumour-cell counts and score, exactly
    assert sum(len(d.partial_od) for d in data[:2]) > 2000
