"""Small synthetic HER2 IHC slides and helpers shared by the batch tests."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES

# Fields that differ between two runs of the same slides (clock, durations, workers used).
VOLATILE_ROW = {"seconds"}
VOLATILE_REPORT = {"created", "timings_s", "runtime"}


@pytest.fixture(scope="session")
def ihc_slides(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three 3072 x 2304 Aperio-style HER2 IHC slides at 0.25 µm/px (a few tiles each, seconds to score)."""
    from wsi_her2.synthetic import write_synthetic_slide

    folder = tmp_path_factory.mktemp("ihc-slides")
    paths = []
    for seed in range(3):
        path = folder / f"ihc-{seed}.svs"
        write_synthetic_slide(path, width=3072, height=2304, mpp=0.25, stain="ihc", tissue_fraction=0.5, seed=10 + seed)
        paths.append(path)
    return paths


def place(slide: Path, folder: Path, name: str | None = None) -> Path:
    """Put ``slide`` into ``folder`` (a symlink: tests never copy real data around)."""
    target = folder / (name or slide.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(slide, target)
    return target


def copy(slide: Path, folder: Path, name: str | None = None) -> Path:
    """A real copy (for tests that change the file)."""
    target = folder / (name or slide.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(slide, target)
    return target


def fixture_or_none(*parts: str) -> Path | None:
    path = FIXTURES.joinpath(*parts)
    return path if path.exists() else None


def stable_rows(summary_json: Path) -> list[dict[str, Any]]:
    """The summary's rows without the fields that change from run to run."""
    rows = json.loads(summary_json.read_text())["slides"]
    return [{k: v for k, v in row.items() if k not in VOLATILE_ROW} for row in rows]


def stable_report(report_json: Path) -> dict[str, Any]:
    """A report without its timestamps, timings and runtime facts."""
    report = json.loads(report_json.read_text())
    report = {k: v for k, v in report.items() if k not in VOLATILE_REPORT}
    report["config"]["loader"].pop("workers", None)
    return report


def tree_files(out: Path) -> dict[str, bytes | None]:
    """Every file under a batch output folder (zarr chunks included), content or None for reports/summaries."""
    files: dict[str, bytes | None] = {}
    for path in sorted(out.rglob("*")):
        locks = any(part.startswith(".wsi-her2-") for part in path.relative_to(out).parts)  # run and slide locks
        if path.is_file() and not locks:
            rel = path.relative_to(out).as_posix()
            volatile = path.name in ("report.json", "batch_manifest.json") or path.name.startswith("summary")
            files[rel] = None if volatile else path.read_bytes()
            if path.suffix == ".geojson":  # feature ids are random UUIDs (QuPath object ids)
                data = json.loads(path.read_text())
                for feature in data.get("features", []):
                    feature.pop("id", None)
                files[rel] = json.dumps(data, sort_keys=True).encode()
    return files
