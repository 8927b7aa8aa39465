"""Evaluating a trained checkpoint on the test split; stain checks."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import require_models

require_models()
import pytest  # noqa: E402

from wsi_her2.errors import StainMismatchError  # noqa: E402
from wsi_her2.training.config import DataConfig  # noqa: E402
from wsi_her2.training.evaluate import evaluate_checkpoint, write_evaluation  # noqa: E402


def test_evaluation_on_the_test_split_beats_the_baseline(trained: Path, bci_learn: Path, tmp_path: Path) -> None:
    result = evaluate_checkpoint(trained, bci_learn, device="cpu", workers=0)
    metrics = result.metrics
    assert metrics["data"]["split"] == "test" and metrics["images"] == 32
    assert metrics["class_counts"] == {"0": 8, "1+": 8, "2+": 8, "3+": 8}
    assert metrics["majority_baseline_accuracy"] == 0.25
    assert metrics["accuracy"] >= 0.55 and metrics["quadratic_weighted_kappa"] > 0.5
    assert "slide" in metrics["label_note"]
    files = write_evaluation(result, tmp_path / "eval")
    assert {p.name for p in files.values()} == {
        "metrics.json",
        "confusion_matrix.json",
        "confusion_matrix.png",
        "predictions.csv",
        "report.md",
    }
    confusion = json.loads((tmp_path / "eval" / "confusion_matrix.json").read_text())
    assert sum(map(sum, confusion["matrix"])) == 32 and confusion["rows"] == "true class"
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "majority-class baseline" in report and "quadratic-weighted kappa" in report


def test_weight_file_and_folder_give_the_same_result(trained: Path, bci_learn: Path) -> None:
    a = evaluate_checkpoint(trained, bci_learn, device="cpu", batch_size=7)
    b = evaluate_checkpoint(trained / "model.safetensors", bci_learn, device="cpu", batch_size=32)
    assert a.metrics["accuracy"] == b.metrics["accuracy"]
    assert a.predictions.probabilities == pytest.approx(b.predictions.probabilities, abs=1e-5)


def test_a_stain_that_contradicts_the_card_is_refused_unless_allowed(trained: Path, bci_learn: Path) -> None:
    with pytest.raises(StainMismatchError, match="trained on IHC"):
        evaluate_checkpoint(trained, bci_learn, stain="he", device="cpu")
    result = evaluate_checkpoint(trained, bci_learn, stain="he", allow_stain_mismatch=True, device="cpu")
    assert result.metrics["stain"] == "he" and all("HE" in p.parts for p in result.images.paths)


def test_three_class_view_of_four_class_labels_needs_a_three_class_model(trained: Path, bci_learn: Path) -> None:
    # DataConfig's classes are replaced by the card's: a 4-class model reads 4-class labels
    result = evaluate_checkpoint(trained, bci_learn, DataConfig(num_classes=3), device="cpu")
    assert result.metrics["classes"] == ["0", "1+", "2+", "3+"]
