"""The case list: the spellings labs use are understood, and every bad list stops with one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.validation.helpers import write_cases_csv
from wsi_her2.errors import DatasetError, InputNotFoundError, MppError
from wsi_her2.validation.cases import parse_ish, parse_score, read_cases


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1+", 1),
        ("1", 1),
        ("2+ ", 2),
        (" 3+", 3),
        ("+2", 2),
        ("2 +", 2),
        ("IHC 2+", 2),
        ("HER2 3+", 3),
        ("0+", 0),
        ("2.0", 2),
        ("4+", None),
        ("", None),
        ("negative", None),
        ("1-2+", None),
        ("2++", None),
    ],
)
def test_pathologist_scores_are_read_in_common_spellings(text: str, expected: int | None) -> None:
    assert parse_score(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("positive", (True, True)),
        ("Amplified", (True, True)),
        ("POS", (True, True)),
        ("negative", (False, True)),
        ("not amplified", (False, True)),
        ("non-amplified", (False, True)),
        ("", (None, True)),
        ("n/a", (None, True)),
        ("not done", (None, True)),
        ("equivocal", (None, False)),
        ("+", (None, False)),
        ("maybe", (None, False)),
    ],
)
def test_ish_status_is_positive_negative_or_blank(text: str, expected: tuple[bool | None, bool]) -> None:
    assert parse_ish(text) == expected


@pytest.fixture
def slides(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.svs", "b.svs", "sub/c.png", "sub/roi.geojson"):
        (folder / name).write_bytes(b"x")
    return folder


def test_relative_paths_resolve_against_the_csvs_folder(slides: Path) -> None:
    path = write_cases_csv(
        slides / "cases.csv",
        ["Case ID", "Slide", "Pathologist score", "ISH status", "mpp", "ROI", "notes"],
        [
            ["A-1", "a.svs", "2+", "positive", "", "sub/roi.geojson", "re-cut"],
            ["", "sub/c.png", "1", "", "0.5", "", ""],
        ],
    )
    cases = read_cases(path)
    first, second = cases.cases
    assert (first.case_id, first.slide, first.pathologist_score, first.ish, first.roi) == (
        "A-1",
        slides / "a.svs",
        2,
        True,
        slides / "sub" / "roi.geojson",
    )
    assert (second.case_id, second.pathologist_label, second.ish_label, second.mpp) == ("c", "1+", None, 0.5)
    assert first.reference_status == "positive" and second.reference_status == "negative"
    assert cases.columns["score"] == "Pathologist score"


def test_semicolon_lists_from_spreadsheets_with_a_bom_are_read(slides: Path) -> None:
    path = slides / "cases.csv"
    path.write_text("\ufeffslide;score;ish\na.svs;3+;\n# b.svs;0;\n\nb.svs;0;negative\n", encoding="utf-8")
    cases = read_cases(path)
    assert [(c.case_id, c.pathologist_score, c.ish, c.line) for c in cases.cases] == [
        ("a", 3, None, 2),
        ("b", 0, False, 5),
    ]


def test_a_2plus_without_ish_has_no_reference_status(slides: Path) -> None:
    path = write_cases_csv(slides / "cases.csv", ["slide", "score"], [["a.svs", "2+"]])
    assert read_cases(path).cases[0].reference_status is None


@pytest.mark.parametrize(
    ("header", "rows", "error", "phrase"),
    [
        (["slide", "ish"], [["a.svs", "positive"]], DatasetError, "no pathologist_score column"),
        (["score"], [["1+"]], DatasetError, "no slide (path) column"),
        (["slide", "score", "stain"], [["a.svs", "1+", "HER2"]], DatasetError, "unknown column(s) stain"),
        (["slide", "score", "pathologist"], [["a.svs", "1+", "1+"]], DatasetError, "all name the score"),
        (["slide", "score"], [["a.svs", "4+"]], DatasetError, "line 2: unknown pathologist score '4+'"),
        (["slide", "score"], [["a.svs", ""]], DatasetError, "line 2: no pathologist score"),
        (["slide", "score", "ish"], [["a.svs", "2+", "equivocal"]], DatasetError, "unknown ISH status 'equivocal'"),
        (["slide", "score", "mpp"], [["a.svs", "2+", "-1"]], DatasetError, "µm/px must be a positive number"),
        (["slide", "score"], [["a.svs", "1+"], ["a.svs", "2+"]], DatasetError, "case id 'a' on lines 2 and 3"),
        (["case", "slide", "score"], [["../x", "a.svs", "1+"]], DatasetError, "cannot name a folder"),
        (["slide", "score"], [["missing.svs", "1+"], ["b.svs", "0"]], InputNotFoundError, "1 slide(s) not found"),
        (["slide", "score", "roi"], [["a.svs", "1+", "nope.geojson"]], InputNotFoundError, "ROI file(s) not found"),
        (["slide", "score"], [["sub/c.png", "1+"]], MppError, "image(s) with no µm/px: c.png (line 2)"),
        (["slide", "score"], [], DatasetError, "holds no cases"),
    ],
)
def test_bad_case_lists_stop_with_one_error_naming_the_problem(
    slides: Path, header: list[str], rows: list[list[str]], error: type, phrase: str
) -> None:
    path = write_cases_csv(slides / "cases.csv", header, rows)
    with pytest.raises(error) as info:
        read_cases(path)
    assert phrase in info.value.message
    assert "\n" not in info.value.user_message()


def test_an_empty_file_and_a_missing_file_are_told_apart(tmp_path: Path) -> None:
    empty = tmp_path / "cases.csv"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match="is empty"):
        read_cases(empty)
    with pytest.raises(InputNotFoundError, match="case list not found"):
        read_cases(tmp_path / "absent.csv")


def test_mpp_fallback_lets_images_without_an_mpp_column_through(slides: Path) -> None:
    path = write_cases_csv(slides / "cases.csv", ["slide", "score"], [["sub/c.png", "0"]])
    assert read_cases(path, mpp_fallback=0.5).cases[0].mpp is None
