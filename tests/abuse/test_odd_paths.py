"""Odd paths for `info`, `tile` and `score`, and a slide deleted or truncated while `score` reads it.

Spaces, non-ASCII names, leading dashes (after ``--`` and as ``./-x``), symlinks (chains, dangling,
loops), FIFOs and folders. A slide that disappears or shrinks under a running command stops it
with one line (exit 3 or 4), and nothing half-written gets a final name: a complete result from
an earlier run in the same folder is left exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.abuse.conftest import ROOT, CliResult, assert_one_line

ODD_NAMES = ["with space.svs", "-leading-dash.svs", "ünïcödé 漢字 🔬.svs", "semi;colon $(x) `y`.svs", "a'quote\".svs"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_names_work_for_info_tile_and_score(
    cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(small_slide, tmp_path / name)
    out = f"out {name}"
    # A leading dash: after `--`, and as ./-name (the two ways a shell user writes it).
    info = cli("info", "--json", "--", name)
    assert info.exit_code == 0, info.stderr
    assert json.loads(info.stdout)["path"] == name
    assert cli("info", f"./{name}").exit_code == 0
    tiled = cli("tile", "-o", f"{out}/tile", "--workers", "0", "--quiet", "--", name)
    assert tiled.exit_code == 0, tiled.stderr
    scored = cli("score", "-o", f"{out}/score", "--workers", "0", "--quiet", f"./{name}")
    assert scored.exit_code == 0, scored.stderr
    report = json.loads((tmp_path / out / "score" / "report.json").read_text(encoding="utf-8"))
    assert Path(report["slide"]["path_resolved"]) == (tmp_path / name).resolve()
    assert report["status"] == "done" and report["tiles"]["on_tissue"] == 16 and report["tiles"]["scored"] >= 1


def test_a_chain_of_symlinks_is_followed_and_the_real_file_recorded(
    cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "first.svs", tmp_path / "links" / "second.svs"
    second.parent.mkdir()
    os.symlink(small_slide, first)
    os.symlink(first, second)
    result = cli("score", second, "-o", tmp_path / "out", "--workers", "0", "--quiet")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["slide"]["path"] == str(second)
    assert report["slide"]["path_resolved"] == str(small_slide.resolve())


@pytest.mark.parametrize("command", ["info", "tile", "score"])
def test_broken_paths_are_one_line(cli: Callable[..., CliResult], tmp_path: Path, command: str) -> None:
    dangling, loop_a, loop_b = tmp_path / "dangling.svs", tmp_path / "a.svs", tmp_path / "b.svs"
    os.symlink(tmp_path / "gone.svs", dangling)
    os.symlink(loop_b, loop_a)
    os.symlink(loop_a, loop_b)
    folder = tmp_path / "folder.svs"
    folder.mkdir()
    extra = [] if command == "info" else ["-o", tmp_path / "out", "--quiet"]
    assert_one_line(cli(command, dangling, *extra), 3, "symbolic link to", "which does not exist")
    assert_one_line(cli(command, loop_a, *extra), 3, "loop of links")
    assert_one_line(cli(command, folder, *extra), 4, "is a folder")
    assert_one_line(cli(command, tmp_path / "missing.svs", *extra), 3, "slide not found")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["info", "score"])
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path, command: str) -> None:
    fifo = tmp_path / "slide.svs"
    os.mkfifo(fifo)
    extra = [] if command == "info" else ["-o", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "wsi_her2_cli.main", command, str(fifo), *extra],
                          capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert done.returncode == 4 and "not a regular file" in done.stderr


def test_an_output_path_that_is_a_file_is_exit_10(
    cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path
) -> None:
    taken = tmp_path / "taken"
    taken.write_text("mine")
    assert_one_line(cli("score", small_slide, "-o", taken, "--quiet", "--workers", "0"), 10, str(taken))
    assert taken.read_text() == "mine"


# -- the slide changes while the command reads it ----------------------------------------------------
@pytest.fixture(scope="module")
def large_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8192 x 4096 IHC SVS at 0.5 µm/px, tissue everywhere: 128 DAB tiles, read in several batches."""
    from wsi_her2.synthetic import write_synthetic_slide

    path = tmp_path_factory.mktemp("large") / "large.svs"
    write_synthetic_slide(path, width=8192, height=4096, mpp=0.5, stain="ihc", tissue_map=np.ones((4, 8), bool),
                          downsamples=(1, 4, 16), seed=7)  # fmt: skip
    return path


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture
def sabotage(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, Callable[[], None], bool], None]]:
    """Run an action from the command's own progress reports: when a stage starts, or after its first batch."""
    from wsi_her2_cli.console import RichProgress

    original = RichProgress.__call__
    plans: list[tuple[str, Callable[[], None], bool]] = []
    done: list[bool] = []

    def spy(self: Any, event: Any) -> None:
        for stage, action, after_first in plans:
            due = event.stage == stage and (event.completed > 0 if after_first else event.completed == 0)
            if due and not done:
                done.append(True)
                action()
        original(self, event)

    monkeypatch.setattr(RichProgress, "__call__", spy)

    def plan(stage: str, action: Callable[[], None], after_first: bool = False) -> None:
        plans.append((stage, action, after_first))

    yield plan
    assert done, "the sabotage never ran"


def _truncate(path: Path, fraction: float) -> Callable[[], None]:
    return lambda: os.truncate(path, int(path.stat().st_size * fraction))


@pytest.mark.parametrize("workers", ["0", "2"])
@pytest.mark.parametrize(
    ("command", "stage"), [("score", "score"), pytest.param("tile", "tiles", marks=pytest.mark.slow)]
)
def test_a_slide_deleted_before_its_tiles_are_read(
    cli: Callable[..., CliResult], large_slide: Path, tmp_path: Path, sabotage: Any,
    command: str, stage: str, workers: str,
) -> None:  # fmt: skip
    slide = tmp_path / "slide.svs"
    shutil.copy(large_slide, slide)
    out = tmp_path / "out"
    sabotage(stage, slide.unlink)
    result = cli(command, slide, "-o", out, "--workers", workers, "--quiet")
    assert_one_line(result, 3, "slide not found", str(slide))
    assert not out.exists()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_slide_truncated_before_its_tiles_are_read(
    cli: Callable[..., CliResult], large_slide: Path, tmp_path: Path, sabotage: Any, workers: str
) -> None:
    slide = tmp_path / "slide.svs"
    shutil.copy(large_slide, slide)
    sabotage("score", _truncate(slide, 0.5))
    result = cli("score", slide, "-o", tmp_path / "out", "--workers", workers, "--quiet")
    assert_one_line(result, 4, "truncated")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_slide_truncated_while_its_tiles_are_read_leaves_the_earlier_result_intact(
    cli: Callable[..., CliResult], large_slide: Path, tmp_path: Path, sabotage: Any
) -> None:
    slide = tmp_path / "slide.svs"
    shutil.copy(large_slide, slide)
    out = tmp_path / "out"
    first = cli("score", slide, "-o", out, "--workers", "0", "--quiet")
    assert first.exit_code == 0, first.stderr
    before = _digest(out)
    # After the first batch of tiles has been scored, the rest of level 0 is cut off.
    sabotage("score", _truncate(slide, 0.3), True)
    result = cli("score", slide, "-o", out, "--workers", "0", "--quiet")
    assert_one_line(result, 4, "truncated", str(slide))
    assert _digest(out) == before  # the earlier complete result, byte for byte; no temporaries
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
