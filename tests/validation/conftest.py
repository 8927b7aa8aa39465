"""Synthetic cases and their score folders, made once per session for the library tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.validation.helpers import MPP, write_case_image

PATTERNS = ("0", "faint6", "1+", "2+", "3+")


@pytest.fixture(scope="session")
def case_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Pattern name -> a synthetic IHC image of that pattern (PNG, 0.5 µm/px)."""
    root = tmp_path_factory.mktemp("case-images")
    return {p: write_case_image(root / f"{k}.png", p, seed=k) for k, p in enumerate(PATTERNS)}


@pytest.fixture(scope="session")
def scored(case_images: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Pattern name -> the score folder of its image (DAB scorer, default settings, no loader processes)."""
    from wsi_her2.config import LoaderConfig
    from wsi_her2.settings import ScoreSettings, run_score

    root = tmp_path_factory.mktemp("scored")
    settings = ScoreSettings(loader=LoaderConfig(workers=0))
    folders = {}
    for k, (pattern, image) in enumerate(case_images.items()):
        folders[pattern] = root / f"score-{k}"
        run_score(image, folders[pattern], settings, mpp=MPP)
    return folders
