"""A real full filesystem under tile, score, batch, train and report: exit 10, the path named, nothing half-written.

A small tmpfs is mounted for the module (root only; skipped with the reason otherwise, CI runs as
root) and filled with a ballast file so that only part of a command's output fits. At every
budget the command stops with one line naming a path inside its output, leaves no temporaries,
and every file that carries a final name is identical to the same file of an uninterrupted run.
With the ballast removed, the same command (or ``train --resume``) completes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.abuse.conftest import CliResult, assert_one_line

MOUNT_BYTES = 48 << 20
# Written last: their presence means "complete", so a failed run must never leave them.
COMPLETION_MARKERS = {"report.json", "manifest.json", "model_card.json"}
FRACTIONS = (0.0, 0.05, 0.3, 0.7, 0.95)


def _can_mount() -> str | None:
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root (CI runs as root)"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount/umount are not installed"
    return None


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 48 MiB tmpfs, unmounted at the end of the module."""
    reason = _can_mount()
    if reason:
        pytest.skip(reason)
    point = tmp_path_factory.mktemp("full-disk")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={MOUNT_BYTES},mode=0755", "tmpfs", str(point)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield point
    finally:
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)  # still busy: detach lazily


def _free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def _fill(disk: Path, leave_bytes: int) -> None:
    """Write a ballast file so that about ``leave_bytes`` stay free."""
    ballast = disk / "ballast"
    ballast.unlink(missing_ok=True)
    size = max(0, _free_bytes(disk) - leave_bytes)
    with open(ballast, "wb") as fh:
        block = b"\xa5" * (1 << 20)
        while size > 0:
            try:
                fh.write(block[: min(size, len(block))])
                fh.flush()
            except OSError:  # it filled up before the count: fine, that is the point
                break
            size -= len(block)
    assert abs(_free_bytes(disk) - leave_bytes) <= (1 << 20) + 8192 or leave_bytes == 0


def _clear(disk: Path) -> None:
    for entry in disk.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _size(folder: Path) -> int:
    return sum(len(data) for data in _files(folder).values())


def _identical_to(reference: Path) -> Callable[[Path], None]:
    """Every final-named file is byte for byte the reference's; no completion marker, no temporaries."""
    expected = _files(reference)

    def check(out: Path) -> None:
        names = {p.name for p in out.rglob("*")}
        assert not COMPLETION_MARKERS & names, names
        for name, data in _files(out).items():
            assert hashlib.sha256(data).digest() == hashlib.sha256(expected[name]).digest(), name

    return check


def _disk_full_line(result: CliResult, disk: Path) -> None:
    line = assert_one_line(result, 10, str(disk))
    assert "disk full" in line or "No space left" in line, line


def _run_at_every_budget(
    cli: Callable[..., CliResult], disk: Path, reference: Path, args: Callable[[Path], list[object]],
    check: Callable[[Path], None], failed: Callable[[CliResult, Path], None] | None = None,
) -> None:  # fmt: skip
    """Run at every budget; ``failed(result, out)`` checks the failure (default: exit 10, one line)."""
    total = _size(reference)
    assert total < MOUNT_BYTES // 3
    for fraction in FRACTIONS:
        _clear(disk)
        out = disk / f"out-{fraction}"
        _fill(disk, int(total * fraction))
        result = cli(*args(out))
        if failed is None:
            _disk_full_line(result, disk)
        else:
            failed(result, out)
        if out.exists():
            assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
            check(out)
    _clear(disk)


def test_tile_on_a_full_disk(cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path, disk: Path) -> None:
    def args(out: Path) -> list[object]:
        return ["tile", small_slide, "-o", out, "--workers", "0", "--quiet"]

    assert cli(*args(tmp_path / "reference")).exit_code == 0
    _run_at_every_budget(cli, disk, tmp_path / "reference", args, _identical_to(tmp_path / "reference"))
    out = disk / "rerun"
    _fill(disk, int(_size(tmp_path / "reference") * 0.3))
    assert cli(*args(out)).exit_code == 10
    (disk / "ballast").unlink()
    assert cli(*args(out)).exit_code == 0  # after freeing space, the same command completes
    done = _files(out)
    assert done.keys() == _files(tmp_path / "reference").keys()
    assert done["tiles.csv"] == _files(tmp_path / "reference")["tiles.csv"]
    _clear(disk)


@pytest.mark.slow
def test_score_on_a_full_disk(cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path, disk: Path) -> None:
    def args(out: Path) -> list[object]:
        return ["score", small_slide, "-o", out, "--workers", "0", "--quiet"]

    reference = tmp_path / "reference"
    assert cli(*args(reference)).exit_code == 0
    _run_at_every_budget(cli, disk, reference, args, _identical_to(reference))
    out = disk / "rerun"
    _fill(disk, int(_size(reference) * 0.5))
    assert cli(*args(out)).exit_code == 10
    (disk / "ballast").unlink()
    assert cli(*args(out)).exit_code == 0
    done, expected = _files(out), _files(reference)
    assert done.keys() == expected.keys()
    for name in done:  # the same results; the report differs only in its time stamps
        if name != "report.json":
            assert done[name] == expected[name], name
    _clear(disk)


@pytest.mark.slow
def test_report_on_a_full_disk(cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path, disk: Path) -> None:
    result_folder = tmp_path / "scored"
    assert cli("score", small_slide, "-o", result_folder, "--workers", "0", "--quiet").exit_code == 0
    reference = tmp_path / "reference"
    assert cli("report", result_folder, "-o", reference / "report.html").exit_code == 0

    def args(out: Path) -> list[object]:
        return ["report", result_folder, "-o", out / "report.html", "--quiet"]

    _run_at_every_budget(cli, disk, reference, args, _identical_to(reference))
    _fill(disk, int(_size(reference) * 0.5))
    assert cli(*args(disk / "rerun")).exit_code == 10
    (disk / "ballast").unlink()
    assert cli(*args(disk / "rerun")).exit_code == 0
    assert (disk / "rerun" / "report.html").read_bytes().rstrip().endswith(b"</html>")
    _clear(disk)


def _whole_training_run(out: Path) -> None:
    import json

    import cv2
    import numpy as np

    from wsi_her2.models.card import read_card
    from wsi_her2.outputs.tile_table import read_csv_columns

    for path in out.rglob("*"):
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            read_csv_columns(path)
        elif path.suffix == ".png":
            assert cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED) is not None
    if (out / "model_card.json").exists():
        read_card(out)  # raises unless the weights are the ones the card describes


@pytest.mark.slow
def test_train_on_a_full_disk(cli: Callable[..., CliResult], tmp_path: Path, disk: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    from tests.training.helpers import SIZE_PX, synthetic_bci

    bci = synthetic_bci(tmp_path / "data", 8)
    fast = ["--arch", "test_resnet", "--no-pretrained", "--input-size", str(SIZE_PX), "--lr", "1e-3",
            "--workers", "0", "--device", "cpu", "--seed", "3", "--epochs", "2", "-q"]  # fmt: skip

    def args(out: Path) -> list[object]:
        return ["train", bci, "-o", out, *fast]

    reference = tmp_path / "reference"
    assert cli(*args(reference)).exit_code == 0
    # A run keeps the checkpoint of its best epoch so far, so one epoch's outputs may be there:
    # each must be whole (the card's hash matches its weights, the tables and pictures parse).
    _run_at_every_budget(cli, disk, reference, args, _whole_training_run)
    out = disk / "rerun"
    _fill(disk, int(_size(reference) * 0.6))
    assert cli(*args(out)).exit_code == 10
    (disk / "ballast").unlink()
    again = cli(*args(out))
    if again.exit_code == 10 and "--resume" in again.stderr:  # an epoch was saved before the disk filled
        again = cli("train", "--resume", out, "-q")
    assert again.exit_code == 0, again.stderr
    assert (out / "model_card.json").is_file() and (out / "model.safetensors").is_file()
    from wsi_her2.models.card import read_card

    card, _ = read_card(out)  # the weights match the card's hash: a complete checkpoint
    assert card.architecture == "test_resnet"
    _clear(disk)


@pytest.mark.slow
def test_batch_on_a_full_disk(cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path, disk: Path) -> None:
    import csv

    import numpy as np

    from tests.batch.conftest import stable_rows, tree_files
    from wsi_her2.batch.manifest import read_manifest
    from wsi_her2.synthetic import write_synthetic_slide

    slides = tmp_path / "slides"
    slides.mkdir()
    os.symlink(small_slide, slides / "one.svs")
    write_synthetic_slide(slides / "two.svs", width=2048, height=2048, mpp=0.5, stain="ihc",
                          tissue_map=np.ones((4, 4), bool), downsamples=(1, 4), seed=2)  # fmt: skip

    def args(out: Path) -> list[object]:
        return ["batch", slides, "-o", out, "--workers", "0", "--quiet"]

    reference = tmp_path / "reference"
    assert cli(*args(reference)).exit_code == 0
    expected = tree_files(reference)
    total = _size(reference)

    def failed(result: CliResult, out: Path) -> None:
        if result.exit_code == 10:  # not even the summary fits: one line naming what could not be written
            _disk_full_line(result, disk)
            return
        assert result.exit_code == 12, result.stderr  # the summary fits: a failed row per slide that did not
        with open(out / "summary.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        not_done = [r for r in rows if r["status"] != "done"]
        assert not_done and all(r["status"] == "failed" for r in not_done)
        assert all(str(disk) in r["message"] and "disk full" in r["message"] for r in not_done), not_done

    def check(out: Path) -> None:
        for folder in (out / "one.svs", out / "two.svs"):
            manifest = read_manifest(folder)
            if manifest is None or manifest["status"] != "done":  # not done: nothing looks complete
                assert not (folder / "report.json").exists()
        for name, data in tree_files(out).items():  # final-named files are the reference's
            if data is not None:
                assert data == expected[name], name

    _run_at_every_budget(cli, disk, reference, args, check, failed)
    _clear(disk)
    out = disk / "rerun"
    _fill(disk, int(total * 0.5))
    assert cli(*args(out)).exit_code in (10, 12)
    (disk / "ballast").unlink()
    assert cli(*args(out)).exit_code == 0  # after freeing space the same command completes the batch
    assert stable_rows(out / "summary.json") == stable_rows(reference / "summary.json")
    assert tree_files(out) == expected
    _clear(disk)
