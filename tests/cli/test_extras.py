"""Optional dependencies: a command that needs an extra which is not installed says which, in one line.

The missing package is simulated (``wsi_her2.extras.missing``), so these run on every install; the
default-install CI configuration (no PyTorch) sees the real thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import fixture_path


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch) -> Any:
    def hide(*modules: str) -> None:
        import wsi_her2.extras as extras

        real = extras.missing
        monkeypatch.setattr(extras, "missing", lambda name: name in modules or real(name))

    return hide


def test_explain_without_matplotlib_names_the_explain_extra(run_cli: Any, without: Any, tmp_path: Path) -> None:
    without("matplotlib")
    out = tmp_path / "out"
    result = run_cli("explain", "dab", fixture_path("he", "he-patch-1000px.png"), "-o", out, "--mpp", "0.5")
    assert result.exit_code == 2
    assert "matplotlib, which is not installed" in result.stderr and "wsi-her2[explain]" in result.stderr
    assert result.stderr.count("\n") == 1 and not out.exists()


def test_trained_models_without_torch_name_the_models_extra(run_cli: Any, without: Any, tmp_path: Path) -> None:
    without("torch")
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"")
    (checkpoint / "model_card.json").write_text("{}")
    core = fixture_path("ihc", "her2-tma-core-score0.jpg")
    result = run_cli("score", core, "--mpp", "0.25", "-o", tmp_path / "o", "--model", checkpoint, "-q")
    assert result.exit_code == 7
    assert "trained models need PyTorch" in result.stderr and "wsi-her2[models]" in result.stderr
    assert "--model dab, needs no PyTorch" in result.stderr
    result = run_cli("train", tmp_path, "-o", tmp_path / "t")
    assert result.exit_code == 7 and "`wsi-her2 train` needs PyTorch" in result.stderr, result.stderr
    result = run_cli("evaluate", checkpoint, tmp_path, "-o", tmp_path / "e")
    assert result.exit_code == 7 and "`wsi-her2 evaluate` needs PyTorch" in result.stderr, result.stderr


def test_the_dab_scorer_needs_no_extra(run_cli: Any, without: Any, tmp_path: Path) -> None:
    without("torch", "torchvision", "timm", "safetensors", "pytorch_grad_cam", "matplotlib")
    core = fixture_path("ihc", "her2-tma-core-score0.jpg")
    result = run_cli("score", core, "--mpp", "0.25", "-o", tmp_path / "o", "--workers", "0", "-q")
    assert result.exit_code == 0, result.stderr


def test_validate_without_matplotlib_writes_the_report_without_its_figure(
    run_cli: Any, without: Any, tmp_path: Path
) -> None:
    import json

    from tests.validation.helpers import write_case_image, write_cases_csv

    without("matplotlib")
    for name, pattern in (("a", "0"), ("b", "1+")):
        write_case_image(tmp_path / f"{name}.png", pattern)
    cases = write_cases_csv(tmp_path / "cases.csv", ["slide", "score"], [["a.png", "0"], ["b.png", "1+"]])
    out = tmp_path / "out"
    result = run_cli("validate", cases, "-o", out, "--mpp", "0.5", "--rerun", "0", "--roi-check", "0",
                     "--workers", "0", "-q")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "validation.json").read_text())
    assert any("validation.png was not drawn" in note and "wsi-her2[explain]" in note for note in report["notes"])
    assert not (out / "validation.png").exists() and "figure" not in report["files"]
    assert "validation.png was not drawn" in (out / "validation.html").read_text()
