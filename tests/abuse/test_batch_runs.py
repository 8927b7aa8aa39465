"""Several `batch` runs on one output folder, and runs killed with SIGKILL at random moments.

The rule: a slide is scored by one process at a time (its lock in ``OUT/.wsi-her2-locks``), a run
that meets a slide another run is scoring goes on with the others and then takes that run's result
(or scores the slide itself when that run died), and whatever was killed when, a rerun ends with
the outputs of one uninterrupted run: report values, tile tables and heatmap arrays byte for byte
(:func:`tests.batch.conftest.tree_files`), summary rows apart from durations.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.abuse.conftest import ROOT
from tests.batch import conftest as batch_conftest
from tests.batch.conftest import place, stable_report, stable_rows, tree_files

ihc_slides = batch_conftest.ihc_slides
NAMES = ("caseA/ihc.svs", "caseB/ihc.svs", "third.svs")
SCORED = re.compile(r"scored now / done earlier\W+(\d+) / (\d+)")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}


@pytest.fixture
def slides(ihc_slides: list[Path], tmp_path: Path) -> Path:
    root = tmp_path / "slides"
    place(ihc_slides[0], root / "caseA", "ihc.svs")
    place(ihc_slides[1], root / "caseB", "ihc.svs")
    place(ihc_slides[2], root, "third.svs")
    return root


@pytest.fixture
def reference(slides: Path, tmp_path: Path) -> Path:
    """One uninterrupted run of the three slides."""
    out = tmp_path / "reference"
    done = subprocess.run(_command(slides, out, "-q"), env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out


def _command(slides: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "wsi_her2_cli.main", "batch", str(slides), "-o", str(out), "--workers", "0", *extra]


def _start(slides: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(_command(slides, out, *extra), env=ENV, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _finish(process: subprocess.Popen[str], timeout_s: float = 300) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout_s)
    return process.returncode, err


def _kill(process: subprocess.Popen[str]) -> None:
    os.killpg(process.pid, signal.SIGKILL)  # the batch and any job process, at once
    process.communicate()


def _scored(stderr: str) -> tuple[int, int]:
    """(scored now, done earlier) from the summary a run prints."""
    found = SCORED.search(stderr)
    assert found, stderr[-2000:]
    return int(found.group(1)), int(found.group(2))


def _walk(out: Path) -> list[Path]:
    """Everything under ``out`` now (folders renamed during the walk are skipped)."""
    found = []
    for folder, dirs, files in os.walk(out):
        found += [Path(folder) / name for name in (*dirs, *files)]
    return found


def _done_names(out: Path) -> set[str]:
    from wsi_her2.batch.manifest import read_manifest

    names = set()
    for name in NAMES:
        manifest = read_manifest(out / name)
        if manifest is not None and manifest.get("status") == "done":
            names.add(name)
    return names


def assert_same_as(out: Path, reference: Path) -> None:
    """Outputs equal to the uninterrupted run's (not timestamps), no temporaries left."""
    assert not [p for p in out.rglob(".tmp-*")]
    assert stable_rows(out / "summary.json") == stable_rows(reference / "summary.json")
    got, expected = tree_files(out), tree_files(reference)
    differing = sorted(k for k in set(got) | set(expected) if got.get(k, b"?") != expected.get(k, b"?"))
    assert not differing, differing
    for report in reference.rglob("report.json"):
        assert stable_report(out / report.relative_to(reference)) == stable_report(report)


def test_two_runs_at_once_score_every_slide_once(slides: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first, second = _start(slides, out), _start(slides, out)
    (code_a, err_a), (code_b, err_b) = _finish(first), _finish(second)
    assert (code_a, code_b) == (0, 0), (err_a[-2000:], err_b[-2000:])
    scored_a, earlier_a = _scored(err_a)
    scored_b, earlier_b = _scored(err_b)
    # Each slide was scored by exactly one of the runs; the other took its result.
    assert scored_a + scored_b == len(NAMES) and earlier_a + earlier_b == len(NAMES)
    assert_same_as(out, reference)


@pytest.mark.parametrize("other_run", ["finishes it", "dies"])
def test_a_slide_another_run_is_scoring_is_left_then_taken_over(
    slides: Path, reference: Path, tmp_path: Path, other_run: str
) -> None:
    from wsi_her2.batch.locks import slide_lock

    out = tmp_path / "out"
    held = "caseB/ihc.svs"
    with slide_lock(out, held) as got:  # this test plays the other run, scoring caseB
        assert got
        process = _start(slides, out)
        deadline = time.monotonic() + 240
        while _done_names(out) != set(NAMES) - {held}:
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)
        assert process.poll() is None, "the run must wait for the slide another run is scoring"
        assert not (out / held / "report.json").exists(), "the run must not touch a slide another run holds"
        if other_run == "finishes it":
            shutil.copytree(reference / held, out / held, dirs_exist_ok=True)
    code, err = _finish(process)
    assert code == 0, err[-2000:]
    assert _scored(err) == ((2, 1) if other_run == "finishes it" else (3, 0))
    assert_same_as(out, reference)


@pytest.mark.slow
def test_kill_9_at_random_moments_then_rerun_equals_an_uninterrupted_run(slides: Path, tmp_path: Path) -> None:
    (slides / "broken.svs").write_text("not a slide")  # a failed slide is redone by every rerun
    reference = tmp_path / "reference"
    started = time.monotonic()
    code, _ = _finish(_start(slides, reference, "-q"))
    assert code == 12
    whole_s = time.monotonic() - started

    out = tmp_path / "out"
    rng = random.Random(20261202)
    # Each run is killed at one moment: while a temporary file is being written (a report, a zarr
    # chunk, a summary), just after a slide's manifest appears, or at a random time (start-up,
    # mid-slide, between slides). Every run resumes from what the ones before it left.
    moments = ("temporary", "time", "manifest", "temporary", "time", "time")
    killed_at = []
    for attempt, moment in enumerate(moments):
        jobs = ("--jobs", "2") if attempt % 2 else ()
        done_before = len(_done_names(out))
        process = _start(slides, out, "-q", *jobs)
        t0 = time.monotonic()
        delay = rng.uniform(0.1, 0.9) * whole_s
        while process.poll() is None and time.monotonic() - t0 < 120:
            if moment == "time" and time.monotonic() - t0 > delay:
                break
            if moment == "temporary" and any(p.name.startswith(".tmp-") for p in _walk(out)):
                break
            if moment == "manifest" and len(_done_names(out)) > done_before:
                break
            time.sleep(0.002)
        if process.poll() is None:
            _kill(process)
            killed_at.append(moment)
    assert len(killed_at) >= 4, killed_at  # most runs were killed, not finished
    code, err = _finish(_start(slides, out, "-q"))
    assert code == 12, err[-2000:]
    assert_same_as(out, reference)


@pytest.mark.slow
def test_a_run_killed_while_another_runs_leaves_its_slide_to_the_other(
    slides: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    doomed = _start(slides, out)
    survivor = _start(slides, out)
    time.sleep(2.0)
    _kill(doomed)
    code, err = _finish(survivor)
    assert code == 0, err[-2000:]
    assert_same_as(out, reference)
