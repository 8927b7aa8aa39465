"""wsi-her2 evaluate: the metrics table, the files, stain checks and bad checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import require_models

require_models()
from tests.training.helpers import synthetic_bci, trained_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_checkpoint(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def bci(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_bci(tmp_path_factory.getbasetemp(), 32)


def test_evaluate_prints_metrics_beside_the_baseline(run_cli, trained: Path, bci: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = run_cli("evaluate", trained, bci, "-o", out, "--workers", "0", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    for text in (
        "accuracy",
        "majority baseline (always 0)",
        "macro precision",
        "weighted recall",
        "quadratic-weighted kappa",
        "confusion matrix",
        "slide each patch",
    ):
        assert text in result.stdout.replace("\n", " ").replace("  ", " ") or text in result.stdout, text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 32 and metrics["accuracy"] >= 0.55
    assert (out / "confusion_matrix.png").stat().st_size > 1000


def test_quiet_evaluation_still_prints_the_result(run_cli, trained: Path, bci: Path, tmp_path: Path) -> None:
    result = run_cli("evaluate", trained / "model.safetensors", bci, "-o", tmp_path / "e", "-q", "--workers", "0")
    assert result.exit_code == 0 and "accuracy" in result.stdout and result.stderr == ""


def test_stain_mismatch_exits_8_unless_allowed(run_cli, trained: Path, bci: Path, tmp_path: Path) -> None:
    result = run_cli("evaluate", trained, bci, "-o", tmp_path / "e", "--stain", "he", "-q")
    assert result.exit_code == 8 and "--allow-stain-mismatch" in result.stderr
    allowed = run_cli(
        "evaluate",
        trained,
        bci,
        "-o",
        tmp_path / "e",
        "--stain",
        "he",
        "--allow-stain-mismatch",
        "-q",
        "--workers",
        "0",
    )
    assert allowed.exit_code == 0, allowed.stderr


def test_bad_checkpoints_and_data(run_cli, trained: Path, bci: Path, tmp_path: Path) -> None:
    missing = run_cli("evaluate", tmp_path / "none", bci, "-o", tmp_path / "e", "-q")
    assert missing.exit_code == 3 and "checkpoint not found" in missing.stderr
    pickle = tmp_path / "model.pt"
    pickle.write_bytes(b"\x80\x04")
    refused = run_cli("evaluate", pickle, bci, "-o", tmp_path / "e", "-q")
    assert refused.exit_code == 7 and "never loads" in refused.stderr
    no_data = run_cli("evaluate", trained, tmp_path / "nodata", "-o", tmp_path / "e", "-q")
    assert no_data.exit_code == 3 and "dataset folder not found" in no_data.stderr
