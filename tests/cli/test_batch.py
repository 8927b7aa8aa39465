"""wsi-her2 batch from the command line: exit codes, summaries, lists, shards, kill -9 and resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.batch import conftest as batch_conftest
from tests.batch.conftest import place, stable_report, stable_rows, tree_files
from tests.conftest import ROOT, fixture_path

ihc_slides = batch_conftest.ihc_slides  # the batch tests' session fixture of synthetic IHC slides


def _rows(out: Path, name: str = "summary.csv") -> dict[str, dict[str, str]]:
    with open(out / name, newline="", encoding="utf-8") as fh:
        return {row["slide"]: row for row in csv.DictReader(fh)}


@pytest.fixture
def slides(ihc_slides: list[Path], tmp_path: Path) -> Path:
    root = tmp_path / "slides"
    place(ihc_slides[0], root / "caseA", "ihc.svs")
    place(ihc_slides[1], root / "caseB", "ihc.svs")
    return root


def test_a_clean_folder_exits_0_and_a_rerun_does_no_work(run_cli, slides: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("batch", slides, "-o", out, "--workers", "0")
    assert result.exit_code == 0, result.stderr
    assert "found 2 slides" in result.stderr and "batch summary" in result.stderr
    rows = _rows(out)
    assert {r["status"] for r in rows.values()} == {"done"} and set(rows) == {"caseA/ihc.svs", "caseB/ihc.svs"}
    assert all(r["score"] in ("0", "1+", "2+", "3+") and r["clinical_group"] for r in rows.values())
    assert (out / "caseA/ihc.svs/report.json").is_file() and (out / "caseB/ihc.svs/report.json").is_file()
    again = run_cli("batch", slides, "-o", out, "--workers", "0")
    assert again.exit_code == 0 and "0 / 2" in again.stderr  # scored now / done earlier


def test_bad_slides_are_recorded_and_the_exit_code_is_12(run_cli, slides: Path, tmp_path: Path) -> None:
    (slides / "text.svs").write_text("not a slide")
    core = fixture_path("ihc", "her2-tma-core-score0.jpg")
    place(core, slides / "cores")
    out = tmp_path / "out"
    result = run_cli("batch", slides, "-o", out, "--workers", "0")
    assert result.exit_code == 12, result.stderr
    assert "1 of 4 slides failed" in result.stderr and "summary.csv" in result.stderr
    assert "skipped: 1 image without µm/px" in result.stderr
    rows = _rows(out)
    assert rows["text.svs"]["status"] == "failed" and rows["text.svs"]["error_type"] == "SlideReadError"
    assert "not a slide format" in rows["text.svs"]["message"]
    assert rows["cores/her2-tma-core-score0.jpg"]["status"] == "skipped"
    assert rows["caseA/ihc.svs"]["status"] == "done"


def test_empty_folders_and_only_unusable_files_are_clear_errors(run_cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("batch", empty, "-o", tmp_path / "out")
    assert result.exit_code == 3 and "no slides found" in result.stderr and "empty" in result.stderr
    (empty / "notes.txt").write_text("x")
    (empty / "photo.jpg").write_bytes(b"\xff\xd8")
    result = run_cli("batch", empty, "-o", tmp_path / "out")
    assert result.exit_code == 3 and "no slides to score" in result.stderr and "--mpp" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--roi", "x.geojson"),
        ("--jobs", "2", "--scheduler", "tcp://127.0.0.1:1"),
        ("--shard", "0/2"),
        ("--list", "l.csv"),
    ],
)
def test_bad_option_combinations_exit_2(run_cli, slides: Path, tmp_path: Path, args: tuple[str, ...]) -> None:
    result = run_cli("batch", slides, "-o", tmp_path / "out", *args)
    assert result.exit_code == 2, result.stderr
    assert not (tmp_path / "out").exists()


def test_a_list_with_per_slide_mpp_and_a_missing_slide(run_cli, slides: Path, tmp_path: Path) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text(
        f"path,mpp\n{slides / 'caseA/ihc.svs'},\n{slides / 'caseB/ihc.svs'},0.3\n{slides / 'gone.svs'},\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result = run_cli("batch", "--list", listing, "-o", out, "--workers", "0", "-q")
    assert result.exit_code == 12
    rows = _rows(out)
    assert rows["caseA/ihc.svs"]["status"] == "done" and float(rows["caseA/ihc.svs"]["mpp"]) == 0.25
    assert rows["caseB/ihc.svs"]["status"] == "done" and float(rows["caseB/ihc.svs"]["mpp"]) == 0.3
    assert rows["gone.svs"]["status"] == "failed" and "not found" in rows["gone.svs"]["message"]


def test_shards_write_their_own_summaries_and_a_final_run_joins_them(
    run_cli, slides: Path, ihc_slides: list[Path], tmp_path: Path
) -> None:
    place(ihc_slides[2], slides, "third.svs")
    out = tmp_path / "out"
    for index in (1, 2):
        result = run_cli("batch", slides, "-o", out, "--workers", "0", "--shard", f"{index}/2", "-q")
        assert result.exit_code == 0, result.stderr
    first, second = _rows(out, "summary-shard-1-of-2.csv"), _rows(out, "summary-shard-2-of-2.csv")
    assert not set(first) & set(second) and set(first) | set(second) == {"caseA/ihc.svs", "caseB/ihc.svs", "third.svs"}
    assert not (out / "summary.csv").exists()
    joined = run_cli("batch", slides, "-o", out, "--workers", "0")
    assert joined.exit_code == 0 and "0 / 3" in joined.stderr
    assert {r["status"] for r in _rows(out).values()} == {"done"} and len(_rows(out)) == 3


def _any_done(out: Path) -> bool:
    """True once a slide's manifest says done (folders renamed under the walk are looked at again)."""
    try:
        return any('"status": "done"' in m.read_text() for m in out.rglob("batch_manifest.json"))
    except FileNotFoundError:  # a temporary folder was renamed while the walk was inside it
        return False


def test_kill_9_then_rerun_gives_the_outputs_of_an_uninterrupted_run(
    run_cli, slides: Path, ihc_slides: list[Path], tmp_path: Path
) -> None:
    place(ihc_slides[2], slides, "third.svs")
    (slides / "broken.svs").write_text("not a slide")
    reference = tmp_path / "reference"
    assert run_cli("batch", slides, "-o", reference, "--workers", "0", "-q").exit_code == 12

    out = tmp_path / "out"
    command = [sys.executable, "-m", "wsi_her2_cli.main", "batch", str(slides), "-o", str(out), "-q",
               "--workers", "0", "--jobs", "2"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not _any_done(out):
            assert process.poll() is None, "the batch ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the batch and its job processes, at once
        process.wait()
    done_before = sum('"status": "done"' in m.read_text() for m in out.rglob("batch_manifest.json"))
    assert 1 <= done_before < 3

    result = run_cli("batch", slides, "-o", out, "--workers", "0", "-q")
    assert result.exit_code == 12
    assert not list(out.rglob(".tmp-*"))
    assert stable_rows(out / "summary.json") == stable_rows(reference / "summary.json")
    resumed, expected = tree_files(out), tree_files(reference)
    differing = sorted(k for k in set(resumed) | set(expected) if resumed.get(k, b"?") != expected.get(k, b"?"))
    assert not differing, differing
    for report in reference.rglob("report.json"):
        rel = report.relative_to(reference)
        assert stable_report(out / rel) == stable_report(report)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["already_done"] == done_before
