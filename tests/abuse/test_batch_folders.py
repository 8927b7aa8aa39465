"""Odd folders and lists for `batch`: odd names, links, loops, one slide reached twice, slides vanishing mid-run.

A batch never stops for one bad slide: each gets its summary row (done, skipped with the reason,
or failed with the one-line error), and one file is scored once however many ways it is reached.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.abuse.conftest import CliResult
from tests.abuse.test_odd_paths import ODD_NAMES


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv", newline="", encoding="utf-8") as fh:
        return {row["slide"]: row for row in csv.DictReader(fh)}


def test_a_folder_of_odd_names_links_and_loops(
    cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path
) -> None:
    root = tmp_path / "-slides ü 漢"  # a leading dash and non-ASCII in the folder given to batch, too
    root.mkdir()
    for name in ODD_NAMES:
        shutil.copy(small_slide, root / name)
    os.symlink(root / "with space.svs", root / "alias.svs")  # the same file by a second name
    os.link(root / "with space.svs", root / "z hard link.svs")  # and a third
    os.symlink(root / "missing.svs", root / "dangling.svs")
    os.symlink(root, root / "loop")  # a folder that contains itself
    (root / "sub").mkdir()
    os.symlink("..", root / "sub" / "up")
    out = tmp_path / "out"

    result = cli("batch", "-o", out, "--workers", "0", "-q", "--", root)
    assert result.exit_code == 12, result.stderr  # the dangling link failed; the rest went on
    rows = _rows(out)
    assert set(rows) == {*ODD_NAMES, "alias.svs", "z hard link.svs", "dangling.svs"}  # nothing found twice via loops
    for name in ODD_NAMES:
        assert rows[name]["status"] == "done", rows[name]
        assert (out / name / "report.json").is_file() and (out / name / "batch_manifest.json").is_file()
    for alias in ("alias.svs", "z hard link.svs"):  # the file itself is kept, then the first name
        assert rows[alias]["status"] == "skipped"
        assert "the same file as with space.svs" in rows[alias]["message"]
    assert rows["dangling.svs"]["status"] == "failed"
    assert "dangling" in rows["dangling.svs"]["message"] and "\n" not in rows["dangling.svs"]["message"]

    again = cli("batch", "-o", out, "--workers", "0", "-q", "--", root)
    assert again.exit_code == 12
    assert {k: v["status"] for k, v in _rows(out).items()} == {k: v["status"] for k, v in rows.items()}


def test_one_slide_listed_by_several_paths_is_scored_once(
    cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "cases"
    folder.mkdir()
    shutil.copy(small_slide, folder / "case 1.svs")
    os.symlink(folder / "case 1.svs", folder / "link.svs")
    listing = tmp_path / "list.csv"
    listing.write_text(
        "path,mpp\n"
        "cases/case 1.svs,\n"
        f"{folder / 'case 1.svs'},\n"  # the same path spelt absolutely: the same name
        "cases/link.svs,\n"  # a link to it: another name, the same file
        "cases/case 1.svs,\n",  # listed twice
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result = cli("batch", "--list", listing, "-o", out, "--workers", "0")
    assert result.exit_code == 0, result.stderr
    rows = _rows(out)
    assert rows["case 1.svs"]["status"] == "done"
    assert rows["link.svs"]["status"] == "skipped" and "the same file as case 1.svs" in rows["link.svs"]["message"]
    assert len(rows) == 2 and "2 listed twice" in result.stderr


def test_slides_deleted_or_truncated_during_a_batch_fail_alone(small_slide: Path, tmp_path: Path) -> None:
    from wsi_her2.batch import discover_slides, run_batch
    from wsi_her2.settings import ScoreSettings

    root = tmp_path / "slides"
    root.mkdir()
    for name in ("a.svs", "b.svs", "c.svs"):
        shutil.copy(small_slide, root / name)

    def vandal(event: tuple[str, Any, Any]) -> None:
        kind, task, _ = event
        if kind == "start" and task.entry.name == "a.svs":  # b and c were found, then changed under the run
            (root / "c.svs").unlink()
            with open(root / "b.svs", "r+b") as fh:
                fh.truncate(os.path.getsize(root / "b.svs") // 3)

    settings = ScoreSettings.from_sections({"loader": {"workers": 0}})
    outcome = run_batch(discover_slides(root), tmp_path / "out", settings, on_event=vandal)
    rows = {row["slide"]: row for row in outcome.rows}
    assert rows["a.svs"]["status"] == "done"
    assert rows["b.svs"]["status"] == "failed" and "truncated" in rows["b.svs"]["message"]
    assert rows["c.svs"]["status"] == "failed" and "not found" in rows["c.svs"]["message"]
    for name in ("b.svs", "c.svs"):  # nothing that looks complete
        assert not (tmp_path / "out" / name / "report.json").exists()
        assert not list((tmp_path / "out").rglob(".tmp-*"))
