"""Every exit code of the README's table, each caused by a real failing input through the real command line.

Each test runs ``python -m wsi_her2_cli.main`` (the console script's code) in a subprocess, except the
internal error, which needs a bug and is injected in-process behind the same guard. A last test
checks that the README's table and these tests name the same codes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import ROOT, fixture_path

TESTED: set[int] = set()


def covers(code: int) -> Callable[[Any], Any]:
    TESTED.add(code)
    return lambda func: func


def wsi_her2(*args: object, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "wsi_her2_cli.main", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
    )  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert words in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr


@covers(0)
def test_0_done(tmp_path: Path) -> None:
    result = wsi_her2("info", fixture_path("slides", "aperio-cmu1-small-region.svs"), "--json")
    assert result.returncode == 0, result.stderr
    assert '"vendor": "aperio"' in result.stdout


@covers(1)
def test_1_internal_error_says_how_to_get_the_traceback(run_cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("wsi_her2.slide.open_slide", bug)
    result = run_cli("info", fixture_path("slides", "aperio-16px.svs"))
    assert result.exit_code == 1
    assert "internal error: ZeroDivisionError: a bug" in result.stderr and "--debug" in result.stderr


@covers(2)
def test_2_bad_option_and_bad_config_value(tmp_path: Path) -> None:
    core = fixture_path("ihc", "her2-tma-core-score0.jpg")
    result = wsi_her2("score", core, "--mpp", "0.25", "-o", tmp_path / "o", "--rule", "bogus")
    assert result.returncode == 2 and "bogus" in result.stderr
    config = tmp_path / "c.toml"
    config.write_text("[grid]\nmin_tissue_fraction = 3.0\n")
    result = wsi_her2("score", core, "--mpp", "0.25", "-o", tmp_path / "o", "--config", config)
    assert result.returncode == 2
    one_line(result, "min_tissue_fraction must be between 0 and 1")


@covers(3)
def test_3_input_not_found_slide_and_checkpoint(tmp_path: Path) -> None:
    result = wsi_her2("score", tmp_path / "missing.svs", "-o", tmp_path / "o")
    assert result.returncode == 3
    one_line(result, "not found")
    # A missing checkpoint is exit 3 on every install, also without PyTorch (it used to say "install PyTorch").
    core = fixture_path("ihc", "her2-tma-core-score0.jpg")
    result = wsi_her2("score", core, "--mpp", "0.25", "-o", tmp_path / "o", "--model", tmp_path / "missing")
    assert result.returncode == 3
    one_line(result, "checkpoint not found")


@covers(4)
def test_4_unreadable_slide(tmp_path: Path) -> None:
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"II*\x00" + b"\x00" * 100)  # a TIFF header and nothing behind it
    result = wsi_her2("score", broken, "-o", tmp_path / "o")
    assert result.returncode == 4
    one_line(result, "broken.svs")


@covers(5)
def test_5_unknown_mpp(tmp_path: Path) -> None:
    result = wsi_her2("score", fixture_path("slides", "aperio-tcga-jpeg2000-2levels.svs"), "-o", tmp_path / "o")
    assert result.returncode == 5
    one_line(result, "--mpp")


@covers(6)
def test_6_no_tissue_still_writes_a_report(tmp_path: Path) -> None:
    from wsi_her2.synthetic import write_synthetic_slide

    glass = tmp_path / "glass.svs"
    write_synthetic_slide(glass, width=2048, height=2048, tissue_map=np.zeros((4, 4), bool), seed=1)
    result = wsi_her2("score", glass, "-o", tmp_path / "o", "--workers", "0")
    assert result.returncode == 6
    assert "no tissue" in result.stderr.lower()
    assert (tmp_path / "o" / "report.json").is_file()


@covers(7)
def test_7_unsafe_checkpoint_is_refused_without_loading_it(tmp_path: Path) -> None:
    pickle = tmp_path / "model.pt"
    pickle.write_bytes(b"\x80\x04K\x01.")  # a pickle: never loaded
    core = fixture_path("ihc", "her2-tma-core-score0.jpg")
    result = wsi_her2("score", core, "--mpp", "0.25", "-o", tmp_path / "o", "--model", pickle)
    assert result.returncode == 7
    one_line(result, "pickle")


@covers(8)
def test_8_stain_mismatch(tmp_path: Path) -> None:
    result = wsi_her2("score", fixture_path("slides", "aperio-cmu1-small-region.svs"), "-o", tmp_path / "o", "-q")
    assert result.returncode == 8
    one_line(result, "H&E")


@covers(9)
@pytest.mark.models
def test_9_device_asked_for_and_absent(tmp_path: Path) -> None:
    import torch

    from wsi_her2.models.card import ModelCard
    from wsi_her2.models.loading import save_checkpoint
    from wsi_her2.models.registry import create_model

    if torch.cuda.device_count() > 7:  # pragma: no cover - a machine with 8 GPUs
        pytest.skip("cuda:7 exists here")
    card = ModelCard(architecture="test_resnet", classes=("0", "1+", "2+", "3+"), stain="ihc", name="tiny")
    checkpoint = save_checkpoint(create_model("test_resnet", 4), card, tmp_path / "ckpt")
    core = fixture_path("ihc", "her2-tma-core-score0.jpg")
    result = wsi_her2("score", core, "--mpp", "0.25", "-o", tmp_path / "o", "--model", checkpoint, "--device", "cuda:7")
    assert result.returncode == 9
    one_line(result, "cuda")


@covers(10)
def test_10_cannot_write_the_output(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    core = fixture_path("ihc", "her2-tma-core-score0.jpg")
    result = wsi_her2("score", core, "--mpp", "0.25", "-o", blocker / "out", "--workers", "0", "-q")
    assert result.returncode == 10
    one_line(result, "a-file")


@covers(11)
@pytest.mark.models
def test_11_bad_training_dataset(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = wsi_her2("train", empty, "-o", tmp_path / "o")
    assert result.returncode == 11
    one_line(result, "empty")


@covers(12)
def test_12_some_slides_of_a_batch_failed(tmp_path: Path) -> None:
    from wsi_her2.synthetic import write_synthetic_slide

    slides = tmp_path / "slides"
    slides.mkdir()
    write_synthetic_slide(slides / "ihc.svs", width=2048, height=2048, stain="ihc", tissue_fraction=0.6, seed=5)
    (slides / "broken.svs").write_text("not a slide")
    result = wsi_her2("batch", slides, "-o", tmp_path / "out", "--workers", "0", "-q")
    assert result.returncode == 12
    one_line(result, "1 of 2 slides failed")


@covers(130)
def test_130_interrupted(tmp_path: Path, synthetic_slide: tuple[Path, np.ndarray]) -> None:
    saved = tmp_path / "saved"
    args = ["tile", synthetic_slide[0], "-o", tmp_path / "o", "--tile-size", "64", "--save-tiles", saved,
            "--workers", "1", "-q"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "wsi_her2_cli.main", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (saved.is_dir() and any(saved.iterdir())) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole process group
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip() == "wsi-her2: interrupted"
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_the_readme_table_lists_exactly_the_codes_tested_here() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    codes = {int(code) for code in re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)}
    assert codes == TESTED
