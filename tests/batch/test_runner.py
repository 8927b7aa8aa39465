"""Batches through the library: statuses, unique folders, resume after crashes, invalidation, full disk, jobs."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.batch.conftest import copy, fixture_or_none, place, stable_report, stable_rows, tree_files
from wsi_her2.batch import MANIFEST, discover_slides, prepare_discovery, run_batch
from wsi_her2.config import LoaderConfig
from wsi_her2.models.dab.scorer import DabScorer
from wsi_her2.outputs.schema import SUMMARY_LEADING, SUMMARY_TRAILING
from wsi_her2.settings import ScoreSettings

SETTINGS = ScoreSettings(loader=LoaderConfig(workers=0))


def _run(slides: Path, out: Path, settings: ScoreSettings = SETTINGS, mpp: float | None = None, **kwargs):
    found = prepare_discovery(discover_slides(slides, exclude=[out]), mpp=mpp, shard=None)
    return run_batch(found, out, settings, mpp=mpp, **kwargs)


@pytest.fixture(scope="module")
def slides(ihc_slides: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic IHC slides (two share a file name), broken files, and real fixtures when present."""
    root = tmp_path_factory.mktemp("batch") / "slides"
    place(ihc_slides[0], root / "caseA", "ihc.svs")
    place(ihc_slides[1], root / "caseB", "ihc.svs")
    place(ihc_slides[2], root, "ihc-2.svs")
    (root / "text-named.svs").write_text("this is not a slide\n")
    data = ihc_slides[0].read_bytes()
    (root / "truncated.svs").write_bytes(data[: len(data) // 2])
    for parts in (
        ("slides", "hamamatsu-fluorescence-dapi.ndpi"),  # no tissue
        ("slides", "aperio-cmu1-small-region.svs"),  # H&E: the DAB scorer refuses it
        ("ihc", "ki67-ihc-hamamatsu-crop.ome.tif"),  # real IHC with µm/px
        ("ihc", "her2-tma-core-score0.jpg"),  # an image without µm/px: skipped
    ):
        real = fixture_or_none(*parts)
        if real is not None:
            place(real, root / "real")
    return root


@pytest.fixture(scope="module")
def baseline(slides: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("baseline") / "out"
    return out, _run(slides, out)


def test_every_slide_gets_a_row_and_bad_ones_do_not_stop_the_batch(baseline, slides: Path) -> None:
    out, outcome = baseline
    rows = {r["slide"]: r for r in outcome.rows}
    for name in ("caseA/ihc.svs", "caseB/ihc.svs", "ihc-2.svs"):
        assert rows[name]["status"] == "done" and rows[name]["score"] in ("0", "1+", "2+", "3+")
        assert rows[name]["n_tiles_scored"] >= 1 and sum(rows[name]["class_fractions"].values()) == pytest.approx(1)
        assert (out / name / "report.json").is_file() and (out / name / MANIFEST).is_file()
    # same file name in two folders: two output folders, neither overwritten
    a = json.loads((out / "caseA/ihc.svs/report.json").read_text())
    b = json.loads((out / "caseB/ihc.svs/report.json").read_text())
    assert a["slide"]["path"].endswith("caseA/ihc.svs") and b["slide"]["path"].endswith("caseB/ihc.svs")
    for name in ("text-named.svs", "truncated.svs"):
        # A truncated file is refused at open as a MalformedSlideError (a SlideReadError, exit 4).
        assert rows[name]["status"] == "failed"
        assert rows[name]["error_type"] in ("SlideReadError", "MalformedSlideError")
        assert rows[name]["message"] and "\n" not in rows[name]["message"]
        assert not (out / name / "report.json").exists()
    if "real/hamamatsu-fluorescence-dapi.ndpi" in rows:
        assert rows["real/hamamatsu-fluorescence-dapi.ndpi"]["status"] == "no_tissue"
        assert "fluorescence" in rows["real/hamamatsu-fluorescence-dapi.ndpi"]["message"]
        h_and_e = rows["real/aperio-cmu1-small-region.svs"]
        assert h_and_e["status"] == "failed" and h_and_e["error_type"] == "StainMismatchError"
        assert rows["real/ki67-ihc-hamamatsu-crop.ome.tif"]["status"] == "done"
        assert rows["real/her2-tma-core-score0.jpg"]["status"] == "skipped"
        assert "mpp" in rows["real/her2-tma-core-score0.jpg"]["message"]
    assert outcome.counts["failed"] == len(outcome.failed) >= 2
    assert [r["slide"] for r in outcome.rows] == sorted(rows)


def test_summary_files_have_the_documented_columns(baseline) -> None:
    out, outcome = baseline
    lines = (out / "summary.csv").read_text().splitlines()
    header = lines[0].split(",")
    fractions = [f"fraction({c})" for c in ("0", "1+", "2+", "3+")]
    scorer_fields = [f.key for f in DabScorer().outputs().summary_fields]  # tumour cells, index, ...
    assert "membrane_index" in scorer_fields and "n_tumour_cells" in scorer_fields
    assert header == [*SUMMARY_LEADING, *fractions, *scorer_fields, *SUMMARY_TRAILING]
    assert len(lines) == 1 + len(outcome.rows)
    data = json.loads((out / "summary.json").read_text())
    assert data["counts"] == outcome.counts and len(data["slides"]) == len(outcome.rows)
    assert data["settings_fingerprint"] == SETTINGS.fingerprint() and data["model"] == "dab"
    assert data["run"]["scored_now"] + data["run"]["already_done"] == len(outcome.rows) - outcome.counts["skipped"]


def test_rerun_skips_exactly_the_done_slides(baseline, slides: Path, tmp_path: Path) -> None:
    out, first = baseline
    again = tmp_path / "out"
    shutil.copytree(out, again, symlinks=True)
    before = {p: p.stat().st_mtime_ns for p in again.rglob("report.json")}
    second = _run(slides, again)
    finished = first.counts["done"] + first.counts["no_tissue"]
    assert second.already_done == finished and second.scored_now == first.counts["failed"]
    assert {p: p.stat().st_mtime_ns for p in again.rglob("report.json")} == before  # nothing rewritten
    assert stable_rows(again / "summary.json") == stable_rows(out / "summary.json")


def test_resume_after_a_crash_mid_slide_redoes_only_that_slide(baseline, slides: Path, tmp_path: Path) -> None:
    out, _ = baseline
    crashed = tmp_path / "out"
    shutil.copytree(out, crashed, symlinks=True)
    # caseA: killed while writing (no report, no manifest, temporaries, a truncated table)
    folder = crashed / "caseA/ihc.svs"
    (folder / "report.json").unlink()
    (folder / MANIFEST).unlink()
    (folder / "tiles.csv").write_text("tile_id,co")
    (folder / ".tmp-0badc0de-tiles.csv").write_text("half")
    (folder / ".tmp-0badc0de-heatmap.zarr").mkdir()
    # caseB: a report changed after the manifest was written
    report = crashed / "caseB/ihc.svs/report.json"
    report.write_text(report.read_text().replace('"status": "done"', '"status": "done" '))
    # ihc-2: an older run's manifest said "failed"
    manifest = crashed / "ihc-2.svs" / MANIFEST
    manifest.write_text(manifest.read_text().replace('"status": "done"', '"status": "failed"', 1))
    (crashed / ".tmp-12345678-summary.csv").write_text("half a summary")

    outcome = _run(slides, crashed)
    assert outcome.scored_now == 3 + len(outcome.failed)
    assert not list(crashed.rglob(".tmp-*"))
    assert tree_files(crashed) == tree_files(out)
    for name in ("caseA/ihc.svs", "caseB/ihc.svs", "ihc-2.svs"):
        assert stable_report(crashed / name / "report.json") == stable_report(out / name / "report.json")
    assert stable_rows(crashed / "summary.json") == stable_rows(out / "summary.json")


def test_changed_slide_settings_or_force_redo_the_work(ihc_slides: list[Path], tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    slide = copy(ihc_slides[2], slides)
    out = tmp_path / "out"
    assert _run(slides, out).scored_now == 1
    assert _run(slides, out).already_done == 1
    os.utime(slide, ns=(slide.stat().st_atime_ns, slide.stat().st_mtime_ns + 10**9))  # the file was replaced
    assert _run(slides, out).scored_now == 1
    other = ScoreSettings(loader=LoaderConfig(workers=0, min_blur_score=4.0))  # changes results
    assert _run(slides, out, other).scored_now == 1
    more_workers = dataclasses.replace(other, loader=LoaderConfig(workers=1, min_blur_score=4.0))
    assert _run(slides, out, more_workers).already_done == 1  # worker counts do not change results
    assert _run(slides, out, other, force=True).scored_now == 1


def test_a_full_disk_fails_that_slide_cleanly(ihc_slides, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wsi_her2.outputs.scoring as scoring
    from wsi_her2.outputs.atomic import atomic_path

    slides = tmp_path / "slides"
    place(ihc_slides[0], slides, "full.svs")
    place(ihc_slides[1], slides, "fine.svs")
    real_writer = scoring.write_csv_columns

    def writer(path, columns):
        if "full.svs" in str(path):
            with atomic_path(path) as tmp:
                tmp.write_text("half a table")
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_writer(path, columns)

    monkeypatch.setattr(scoring, "write_csv_columns", writer)
    out = tmp_path / "out"
    outcome = _run(slides, out)
    rows = {r["slide"]: r for r in outcome.rows}
    assert rows["fine.svs"]["status"] == "done"
    assert rows["full.svs"]["status"] == "failed" and rows["full.svs"]["error_type"] == "OutputError"
    assert "disk full" in rows["full.svs"]["message"]
    left = {p.name for p in (out / "full.svs").iterdir()}
    assert left == {MANIFEST}, left  # no partial outputs, no temporaries; the manifest says "failed"
    monkeypatch.setattr(scoring, "write_csv_columns", real_writer)
    again = _run(slides, out)
    assert again.scored_now == 1 and not again.failed


@pytest.mark.timeout(120)
def test_two_jobs_give_the_same_results_as_one(ihc_slides: list[Path], tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    for i, slide in enumerate(ihc_slides):
        place(slide, slides, f"s{i}.svs")
    one, two = tmp_path / "one", tmp_path / "two"
    first = _run(slides, one)
    # two job processes, each with a kept loader pool of one worker: they must also exit cleanly
    second = _run(slides, two, dataclasses.replace(SETTINGS, loader=LoaderConfig(workers=1)), jobs=2)
    assert second.counts["done"] == first.counts["done"] == 3
    assert stable_rows(one / "summary.json") == stable_rows(two / "summary.json")
    assert tree_files(one) == tree_files(two)


def test_changing_mpp_redoes_only_the_slides_that_used_it(ihc_slides: list[Path], tmp_path: Path) -> None:
    from PIL import Image

    from wsi_her2.slide import open_slide

    slides = tmp_path / "slides"
    place(ihc_slides[0], slides, "scan.svs")
    with open_slide(ihc_slides[1]) as reader:
        Image.fromarray(reader.read_region(0, 0, 2048, 2048)).save(slides / "photo.png")
    out = tmp_path / "out"
    assert _run(slides, out).counts["skipped"] == 1  # the image, without --mpp
    first = _run(slides, out, mpp=0.25)
    assert first.scored_now == 1 and first.already_done == 1 and first.counts["done"] == 2
    assert _run(slides, out, mpp=0.25).already_done == 2
    changed = _run(slides, out, mpp=0.3)
    assert changed.scored_now == 1 and changed.already_done == 1  # the SVS has its own µm/px
    assert {r["slide"]: r["mpp"] for r in changed.rows} == {"photo.png": 0.3, "scan.svs": 0.25}
