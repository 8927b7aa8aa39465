"""The case list of ``wsi-her2 validate``: a lab's own slides with the pathologist's score and ISH.

A CSV with a header row. Columns, found by name (case-insensitive; spaces and dashes count as
underscores):

* ``slide`` (or ``path``, ``file``): the slide; relative paths are relative to the CSV's folder;
* ``pathologist_score`` (or ``score``, ``ihc_score``, ``her2_score``, ...): 0, 1+, 2+ or 3+, also
  written ``1``, ``2+ ``, ``+2``, ``IHC 2+``, ``2.0``;
* optional ``ish`` (``fish``, ``ish_status``, ...): positive, negative (``amplified``/``not amplified``,
  ``pos``/``neg``), or blank when not done;
* optional ``mpp`` and ``roi`` (a GeoJSON of the region the pathologist scored), as in ``batch --list``;
* optional ``case`` (``case_id``): the case's name and output folder; default the slide's file stem;
* optional ``notes``/``comment``: ignored.

Every problem is found before anything is scored or written, and reported as one line naming the
file and line: a missing column, an unknown score, an unknown column, a missing slide or ROI file,
a duplicate case id, an image without µm/px, an empty list.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

from wsi_her2.batch.discovery import MPP_HEADERS, PATH_HEADERS, ROI_HEADERS, listed_path, parse_mpp
from wsi_her2.errors import DatasetError, InputNotFoundError, MppError
from wsi_her2.her2 import SCORES_4
from wsi_her2.slide.image_backend import IMAGE_SUFFIXES

CASE_HEADERS = ("case", "case_id", "id", "case_name")
SCORE_HEADERS = (
    "pathologist_score",
    "pathologist",
    "score",
    "ihc_score",
    "her2_score",
    "ihc",
    "her2_ihc",
    "reference_score",
    "consensus_score",
    "truth",
)
ISH_HEADERS = (
    "ish",
    "ish_status",
    "ish_result",
    "fish",
    "fish_status",
    "fish_result",
    "her2_ish",
    "cish",
    "sish",
    "ddish",
)
NOTE_HEADERS = ("note", "notes", "comment", "comments", "remark", "remarks")

_ISH_POSITIVE = {"positive", "pos", "amplified", "amp", "ish+", "fish+", "yes", "true"}
_ISH_NEGATIVE = {
    "negative",
    "neg",
    "not amplified",
    "non-amplified",
    "nonamplified",
    "non amplified",
    "not-amplified",
    "unamplified",
    "ish-",
    "fish-",
    "no",
    "false",
}
_ISH_BLANK = {"", "na", "n/a", "nd", "not done", "none", "unknown"}
_SCORE_RE = re.compile(r"^(?:her2|ihc|her2 ihc)?\s*\+?\s*([0-3])(?:\.0+)?\s*\+?$")
_MAX_LISTED = 3
_MAX_ID_CHARS = 120


@dataclasses.dataclass(frozen=True)
class Case:
    """One scored case.

    Attributes:
        case_id: the case's name, unique in the list; its output folder is ``OUT/cases/<case_id>``.
        slide: the slide file (or DICOM folder).
        pathologist_score: 0, 1, 2 or 3 (IHC 0, 1+, 2+, 3+).
        ish: True (amplified), False (not amplified) or None (not done).
        mpp: µm/px given for this slide, or None.
        roi: regions the pathologist scored (GeoJSON), or None.
        line: line of the CSV it came from.
    """

    case_id: str
    slide: Path
    pathologist_score: int
    ish: bool | None = None
    mpp: float | None = None
    roi: Path | None = None
    line: int = 0

    @property
    def pathologist_label(self) -> str:
        """The score as written in reports: "0", "1+", "2+" or "3+"."""
        return SCORES_4[self.pathologist_score]

    @property
    def ish_label(self) -> str | None:
        """The ISH status as written in reports: positive, negative or None."""
        return None if self.ish is None else ("positive" if self.ish else "negative")

    @property
    def reference_status(self) -> str | None:
        """The case's HER2 status by the lab's methods: ISH when done, else IHC 3+ positive, 0/1+ negative.

        None for IHC 2+ without ISH (equivocal, unresolved).
        """
        if self.ish is not None:
            return "positive" if self.ish else "negative"
        if self.pathologist_score == 3:
            return "positive"
        return "negative" if self.pathologist_score <= 1 else None


@dataclasses.dataclass(frozen=True)
class CaseList:
    """The cases of a CSV, in file order.

    Attributes:
        cases: the cases.
        source: the CSV file.
        columns: which CSV column gave each field ("slide", "score", "ish", ...).
    """

    cases: tuple[Case, ...]
    source: Path
    columns: dict[str, str]

    def __len__(self) -> int:
        return len(self.cases)


def parse_score(text: str) -> int | None:
    """A pathologist's IHC score as 0..3, or None when the text is not one."""
    match = _SCORE_RE.match(" ".join(text.strip().lower().split()))
    return int(match.group(1)) if match else None


def parse_ish(text: str) -> tuple[bool | None, bool]:
    """(status, understood): True/False/None for positive/negative/blank; understood=False otherwise."""
    value = " ".join(text.strip().lower().replace("_", " ").split())
    if value in _ISH_POSITIVE:
        return True, True
    if value in _ISH_NEGATIVE:
        return False, True
    return None, value in _ISH_BLANK


def _normalise(header: str) -> str:
    return re.sub(r"[\s\-]+", "_", header.strip().lower())


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text", hint="save the case list as CSV (UTF-8)") from None
    except OSError as exc:
        raise InputNotFoundError(f"cannot read the case list {path}: {exc.strerror or exc}") from exc
    lines = text.splitlines()
    first = next((line for line in lines if line.strip() and not line.lstrip().startswith("#")), "")
    # Spreadsheets in many locales save CSV with semicolons; tabs come from copy-paste.
    delimiter = max((";", "\t", ","), key=lambda d: (first.count(d), d == ","))
    rows = [(i + 1, row) for i, row in enumerate(csv.reader(lines, delimiter=delimiter))]
    return [(n, r) for n, r in rows if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]


def _find_columns(path: Path, header: list[str]) -> dict[str, int]:
    names = [_normalise(h) for h in header]
    columns: dict[str, int] = {}
    known: set[str] = set(NOTE_HEADERS)
    for key, aliases in (
        ("case", CASE_HEADERS),
        ("slide", PATH_HEADERS),
        ("score", SCORE_HEADERS),
        ("ish", ISH_HEADERS),
        ("mpp", MPP_HEADERS),
        ("roi", ROI_HEADERS),
    ):
        known.update(aliases)
        found = [i for i, name in enumerate(names) if name in aliases]
        if len(found) > 1:
            raise DatasetError(
                f"{path}: columns {', '.join(header[i].strip() for i in found)} all name the {key}",
                hint="keep one of them",
            )
        if found:
            columns[key] = found[0]
    unknown = [header[i].strip() for i, name in enumerate(names) if name and name not in known]
    if unknown:
        raise DatasetError(
            f"{path}: unknown column(s) {', '.join(unknown)}",
            hint="columns are slide, pathologist_score, and optionally case, ish, mpp, roi, notes",
        )
    for key, what in (("slide", "slide (path)"), ("score", "pathologist_score")):
        if key not in columns:
            found_text = ", ".join(h.strip() for h in header if h.strip()) or "none"
            raise DatasetError(
                f"{path}: no {what} column (columns found: {found_text})",
                hint="the first row must name the columns: slide, pathologist_score, and optionally ish, mpp, roi",
            )
    return columns


def _check_case_id(case_id: str, where: str) -> None:
    bad = (
        not case_id
        or case_id in (".", "..")
        or case_id.startswith(".")
        or len(case_id) > _MAX_ID_CHARS
        or any(c in case_id for c in "/\\\0")
        or not case_id.isprintable()
    )
    if bad:
        raise DatasetError(
            f"{where}: case id {case_id!r} cannot name a folder",
            hint=f"use up to {_MAX_ID_CHARS} printable characters, no slashes, not starting with a dot",
        )


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def read_cases(path: str | Path, *, mpp_fallback: float | None = None) -> CaseList:
    """Read and check a case list.

    Args:
        path: the CSV.
        mpp_fallback: µm/px that ``--mpp`` gives images listed without an ``mpp`` value.

    Returns:
        The cases, in file order.

    Raises:
        InputNotFoundError: the CSV, a slide or an ROI file does not exist.
        DatasetError: the CSV is empty, lacks a column, has an unknown column, score or ISH value,
            a bad µm/px, or a case id used twice or unfit for a folder name.
        MppError: an image (JPEG/PNG) has no µm/px and no ``--mpp`` was given.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"case list not found: {path}", hint="give the CSV of scored cases")
    rows = _read_rows(path)
    if not rows:
        raise DatasetError(f"{path} is empty", hint="the first row names the columns: slide, pathologist_score, ...")
    header_line, header = rows[0]
    columns = _find_columns(path, header)
    if len(rows) == 1:
        raise DatasetError(f"{path} holds no cases, only the header (line {header_line})")

    def cell(row: list[str], key: str) -> str:
        index = columns.get(key)
        return row[index].strip() if index is not None and index < len(row) else ""

    base = path.parent
    cases: list[Case] = []
    first_line: dict[str, int] = {}
    for line, row in rows[1:]:
        where = f"{path}, line {line}"
        slide_text = cell(row, "slide")
        if not slide_text:
            raise DatasetError(f"{where}: no slide path")
        score_text = cell(row, "score")
        score = parse_score(score_text)
        if score is None:
            raise DatasetError(
                f"{where}: unknown pathologist score {score_text!r}"
                if score_text
                else f"{where}: no pathologist score",
                hint="write 0, 1+, 2+ or 3+",
            )
        ish_text = cell(row, "ish")
        ish, understood = parse_ish(ish_text)
        if not understood:
            raise DatasetError(
                f"{where}: unknown ISH status {ish_text!r}",
                hint="write positive or negative (the final result after the guideline's work-up), or leave it blank",
            )
        slide = listed_path(slide_text, base)
        roi_text = cell(row, "roi")
        case_id = cell(row, "case") or slide.stem
        _check_case_id(case_id, where)
        if case_id in first_line:
            raise DatasetError(
                f"{path}: case id {case_id!r} on lines {first_line[case_id]} and {line}",
                hint="give each case a unique id (a case column, when two slides share a file name)",
            )
        first_line[case_id] = line
        cases.append(
            Case(
                case_id,
                slide,
                score,
                ish,
                parse_mpp(cell(row, "mpp"), where, DatasetError),
                listed_path(roi_text, base) if roi_text else None,
                line,
            )
        )
    _check_files(path, cases, mpp_fallback)
    return CaseList(tuple(cases), path, {key: header[i].strip() for key, i in columns.items()})


def _check_files(path: Path, cases: list[Case], mpp_fallback: float | None) -> None:
    missing = [f"{c.slide} (line {c.line})" for c in cases if not c.slide.exists()]
    if missing:
        raise InputNotFoundError(
            f"{path}: {len(missing)} slide(s) not found: {_listing(missing)}",
            hint="relative paths are relative to the CSV's folder",
        )
    missing = [f"{c.roi} (line {c.line})" for c in cases if c.roi is not None and not c.roi.is_file()]
    if missing:
        raise InputNotFoundError(
            f"{path}: {len(missing)} ROI file(s) not found: {_listing(missing)}",
            hint="relative paths are relative to the CSV's folder",
        )
    if mpp_fallback is None:
        images = [
            f"{c.slide.name} (line {c.line})"
            for c in cases
            if c.mpp is None and c.slide.suffix.lower() in IMAGE_SUFFIXES
        ]
        if images:
            raise MppError(
                f"{path}: {len(images)} image(s) with no µm/px: {_listing(images)}",
                hint="add an mpp column to the case list, or give --mpp",
            )
