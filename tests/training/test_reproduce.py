"""The paper-reproduction script runs its whole grid on a tiny synthetic BCI (--smoke)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "reproduce_paper.py"


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("reproduce_paper", SCRIPT)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.models
def test_smoke_grid_writes_the_table_with_the_papers_figures(bci_small: Path, tmp_path: Path) -> None:
    script = _script()
    assert len(script.grid()) == 12
    out = tmp_path / "study"
    assert script.main([str(bci_small), "-o", str(out), "--smoke"]) == 0
    table = (out / "results.md").read_text()
    assert "| ConvNeXt-Tiny | IHC | 4 | 97.79% |" in table and "| ConvNeXt-Tiny | H&E | 4 | 95.58% |" in table
    assert table.count("see paper") == 10 and "Smoke run" in table
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 12 and all("accuracy" in m for m in results.values())
    card = json.loads((out / "resnet50-he-3class" / "model" / "model_card.json").read_text())
    assert card["stain"] == "he" and card["classes"] == ["negative", "equivocal", "positive"]
    # a second run reuses every finished cell
    assert script.main([str(bci_small), "-o", str(out), "--smoke", "--only", "resnet50-ihc-4class"]) == 0
