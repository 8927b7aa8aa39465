"""The defaults are the paper's recipe; bad values fail at construction."""

from __future__ import annotations

import pytest

from wsi_her2.errors import ConfigError
from wsi_her2.training.config import DataConfig, TrainConfig


def test_defaults_are_the_papers_recipe() -> None:
    cfg = TrainConfig()
    assert cfg.architecture == "convnext_tiny" and cfg.pretrained
    assert (cfg.optimizer, cfg.lr, cfg.lr_step_epochs, cfg.lr_gamma) == ("adam", 1e-4, 15, 0.1)
    assert (cfg.epochs, cfg.batch_size) == (30, 16)
    assert (cfg.head_hidden, cfg.head_dropout) == ((512, 256), 0.5)
    assert cfg.hflip and cfg.vflip and cfg.shift_fraction > 0 and cfg.hed_jitter == 0
    assert cfg.class_weighting == "none" and not cfg.balanced_sampler and cfg.label_smoothing == 0
    data = DataConfig()
    assert (data.stain, data.num_classes, data.layout, data.tile_mpp) == ("ihc", 4, "auto", None)


@pytest.mark.parametrize(
    "changes",
    [
        {"epochs": 0},
        {"lr": -1.0},
        {"lr_gamma": 0.0},
        {"optimizer": "sgd"},
        {"class_weighting": "inverse"},
        {"shift_fraction": 0.9},
        {"head_hidden": ()},
        {"device": "tpu"},
        {"workers": -1},
    ],
)
def test_invalid_train_settings(changes: dict) -> None:
    with pytest.raises(ConfigError):
        TrainConfig(**changes)


@pytest.mark.parametrize(
    "changes", [{"num_classes": 5}, {"stain": "pas"}, {"layout": "zip"}, {"val_fraction": 0.95}, {"tile_mpp": 0}]
)
def test_invalid_data_settings(changes: dict) -> None:
    with pytest.raises(ConfigError):
        DataConfig(**changes)


def test_round_trip_and_unknown_keys() -> None:
    cfg = TrainConfig(epochs=3, head_hidden=(64,))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown TrainConfig setting"):
        TrainConfig.from_dict({"epoch": 3})
