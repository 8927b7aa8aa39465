"""Training end to end on synthetic BCI: it learns, the checkpoint loads, resuming continues exactly."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import require_models

require_models()
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tests.training.helpers import make_tile_set, tiny_data, tiny_train  # noqa: E402
from wsi_her2.errors import ConfigError, OutputError  # noqa: E402
from wsi_her2.models.loading import load_checkpoint  # noqa: E402
from wsi_her2.outputs.tile_table import read_csv_columns  # noqa: E402
from wsi_her2.progress import ProgressEvent  # noqa: E402
from wsi_her2.training.fit import train  # noqa: E402
from wsi_her2.training.resume import STATE_DIR, STATE_TENSORS, read_state_info  # noqa: E402


def test_training_learns_well_above_chance(trained: Path) -> None:
    card = json.loads((trained / "model_card.json").read_text())
    validation = card["metrics"]["validation"]
    assert validation["accuracy"] >= 0.6  # chance is 0.25 with 4 balanced classes
    assert validation["macro_f1"] >= 0.55
    log = read_csv_columns(trained / "training_log.csv")
    assert log["epoch"] == ["1", "2", "3", "4", "5", "6"]
    assert float(log["train_loss"][-1]) < float(log["train_loss"][0])
    assert card["metrics"]["best_epoch"] == max(range(1, 7), key=lambda e: (float(log["val_macro_f1"][e - 1]), -e))


def test_outputs_and_the_card_describe_the_run(trained: Path) -> None:
    names = {p.name for p in trained.iterdir()}
    assert {
        "model.safetensors",
        "model_card.json",
        "training_log.csv",
        "training_curves.png",
        "train_config.json",
        "split.csv",
        "resume",
    } <= names
    model, card = load_checkpoint(trained)
    assert card.architecture == "test_resnet" and card.classes == ("0", "1+", "2+", "3+")
    assert (card.stain, card.label_granularity, card.input_size_px) == ("ihc", "slide", 64)
    assert card.tile_size_px == 64 and card.tile_mpp is None  # the patches' own side; µm/px unknown
    assert card.training_data["layout"] == "bci" and card.training_data["train_class_counts"]["2+"] == 24
    assert card.recipe["train"]["lr"] == 1e-3 and card.recipe["data"]["val_fraction"] == 0.25
    assert "slide" in card.notes
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 4)
    saved = json.loads((trained / "train_config.json").read_text())
    assert saved["train"]["epochs"] == 6 and Path(saved["run"]["data_root"]).name == "bci-32"
    split = read_csv_columns(trained / "split.csv")
    assert split["split"].count("val") == 32 and len(set(split["file"])) == 128


def _weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / STATE_DIR / STATE_TENSORS))


def test_resume_continues_exactly_where_the_run_stopped(bci_small: Path, tmp_path: Path) -> None:
    cfg = tiny_train(epochs=3, lr_step_epochs=1, lr_gamma=0.5)
    train(bci_small, tmp_path / "straight", tiny_data(), cfg)

    class Stop(Exception):
        pass

    def interrupt(event: ProgressEvent) -> None:
        if event.stage == "epoch 3/3":
            raise Stop  # as if killed during epoch 3

    with pytest.raises(Stop):
        train(bci_small, tmp_path / "resumed", tiny_data(), cfg, progress=interrupt)
    assert read_state_info(tmp_path / "resumed")["epochs_done"] == 2
    train(bci_small, tmp_path / "resumed", tiny_data(), cfg, resume=True)
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for key in straight:  # model, Adam moments and step, random generators
        assert torch.equal(straight[key], resumed[key]), key
    log_a = read_csv_columns(tmp_path / "straight" / "training_log.csv")
    log_b = read_csv_columns(tmp_path / "resumed" / "training_log.csv")
    assert log_b["epoch"] == ["1", "2", "3"]
    assert log_a["train_loss"] == log_b["train_loss"] and log_a["val_accuracy"] == log_b["val_accuracy"]
    assert [float(v) for v in log_b["lr"]] == pytest.approx([1e-3, 5e-4, 2.5e-4])  # the schedule went on


def test_resume_extends_a_finished_run_and_refuses_other_settings(bci_small: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(bci_small, out, tiny_data(), tiny_train(epochs=1))
    with pytest.raises(OutputError, match="already holds a training run"):
        train(bci_small, out, tiny_data(), tiny_train(epochs=1))
    with pytest.raises(ConfigError, match="architecture"):
        train(bci_small, out, tiny_data(), tiny_train(epochs=2, architecture="test_convnext"), resume=True)
    result = train(bci_small, out, tiny_data(), tiny_train(epochs=2), resume=True)
    assert result.log["epoch"] == [1, 2]
    assert read_state_info(out)["epochs_done"] == 2


def test_three_classes_weights_sampler_and_stain_jitter_run(bci_small: Path, tmp_path: Path) -> None:
    cfg = tiny_train(class_weighting="balanced", balanced_sampler=True, hed_jitter=0.05, label_smoothing=0.1)
    result = train(bci_small, tmp_path / "run", tiny_data(num_classes=3, stain="he"), cfg)
    assert result.card.classes == ("negative", "equivocal", "positive") and result.card.stain == "he"
    assert result.best_epoch == 1 and set(result.best_metrics["class_counts"]) == set(result.card.classes)


def test_tile_sets_train_with_slides_kept_whole(bci_small: Path, tmp_path: Path) -> None:
    folder = make_tile_set(bci_small, tmp_path / "tiles")
    result = train(
        folder,
        tmp_path / "run",
        tiny_data(val_fraction=0.3),
        tiny_train(),
    )
    card = result.card
    assert card.label_granularity == "tile" and card.tile_size_px == 1024 and card.notes == ""
    assert card.training_data["val_split"] == "by slide"
    split = read_csv_columns(tmp_path / "run" / "split.csv")
    slide = [Path(f).name.split("_x")[0] for f in split["file"]]
    train_slides = {s for s, k in zip(slide, split["split"]) if k == "train"}
    val_slides = {s for s, k in zip(slide, split["split"]) if k == "val"}
    assert val_slides and train_slides.isdisjoint(val_slides)
    with pytest.raises(ConfigError, match="--tile-size"):
        train(folder, tmp_path / "run2", tiny_data(tile_mpp=0.5), tiny_train())
    result = train(folder, tmp_path / "run3", tiny_data(tile_mpp=0.5, tile_size_px=512, val_fraction=0.0), tiny_train())
    assert (result.card.tile_size_px, result.card.tile_mpp) == (512, 0.5) and result.best_metrics == {}


def test_workers_and_the_image_cache_do_not_change_the_result(bci_small: Path, tmp_path: Path) -> None:
    a = train(bci_small, tmp_path / "a", tiny_data(), tiny_train(workers=0, hed_jitter=0.05))
    b = train(bci_small, tmp_path / "b", tiny_data(), tiny_train(workers=2, hed_jitter=0.05))
    c = train(bci_small, tmp_path / "c", tiny_data(), tiny_train(workers=2, hed_jitter=0.05, cache_images=True))
    assert a.log["train_loss"] == b.log["train_loss"] == c.log["train_loss"]
    assert np.isclose(a.best_metrics["accuracy"], b.best_metrics["accuracy"])
    assert c.card.recipe["train"]["cache_images"] is True
