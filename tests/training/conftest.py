"""Fixtures of the training tests (the modules that need torch say so with ``require_models()``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.helpers import synthetic_bci, trained_checkpoint


@pytest.fixture(scope="session")
def bci_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 training and 2 test images per score, 64 px."""
    return synthetic_bci(tmp_path_factory.getbasetemp(), 8)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of a 6-epoch test_resnet run on a 32-per-class synthetic BCI."""
    return trained_checkpoint(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def bci_learn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dataset ``trained`` learned from (32 training, 8 test images per score)."""
    return synthetic_bci(tmp_path_factory.getbasetemp(), 32)
