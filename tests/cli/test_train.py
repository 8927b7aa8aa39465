"""wsi-her2 train: outputs, resume, config files, offline weights and the one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import require_models

require_models()
from tests.training.helpers import SIZE_PX, synthetic_bci  # noqa: E402
from wsi_her2.outputs.tile_table import read_csv_columns  # noqa: E402

FAST = [
    "--arch",
    "test_resnet",
    "--no-pretrained",
    "--input-size",
    str(SIZE_PX),
    "--lr",
    "1e-3",
    "--workers",
    "0",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def bci(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_bci(tmp_path_factory.getbasetemp(), 8)


def test_train_writes_the_checkpoint_and_prints_class_counts(run_cli, bci: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("train", bci, "-o", out, "--epochs", "1", "--val-fraction", "0.25", *FAST)
    assert result.exit_code == 0, result.stderr
    assert "validation" in result.stderr and "2+" in result.stderr  # the class-count table
    assert "slide each patch came from" in result.stderr.replace("\n", " ")
    assert "best epoch 1" in result.stderr
    assert {"model.safetensors", "model_card.json", "training_log.csv", "training_curves.png"} <= {
        p.name for p in out.iterdir()
    }


def test_resume_continues_from_the_last_epoch(run_cli, bci: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run_cli("train", bci, "-o", out, "--epochs", "1", "-q", *FAST).exit_code == 0
    result = run_cli("train", "--resume", out, "--epochs", "2", "-q")
    assert result.exit_code == 0, result.stderr
    assert read_csv_columns(out / "training_log.csv")["epoch"] == ["1", "2"]
    assert json.loads((out / "train_config.json").read_text())["train"]["epochs"] == 2
    again = run_cli("train", bci, "-o", out, "--epochs", "1", "-q", *FAST)
    assert again.exit_code == 10 and "--resume" in again.stderr
    changed = run_cli("train", "--resume", out, "--epochs", "3", "--classes", "3", "-q")
    assert changed.exit_code == 2 and "num_classes" in changed.stderr


def test_config_file_sets_the_recipe_and_options_win(run_cli, bci: Path, tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(
        "train:\n  architecture: test_resnet\n  pretrained: false\n  epochs: 5\n  workers: 0\n  lr: 0.002\n"
        "data:\n  input_size_px: 64\n  val_fraction: 0.25\n"
    )
    out = tmp_path / "run"
    result = run_cli("train", bci, "-o", out, "--config", config, "--epochs", "1", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    saved = json.loads((out / "train_config.json").read_text())
    assert (saved["train"]["epochs"], saved["train"]["lr"]) == (1, 0.002)
    # the saved configuration is itself a valid --config file
    rerun = run_cli("train", bci, "-o", tmp_path / "rerun", "--config", out / "train_config.json", "-q")
    assert rerun.exit_code == 0, rerun.stderr


def test_offline_pretrained_weights_file(run_cli, bci: Path, tmp_path: Path) -> None:
    import timm
    import torch

    weights = tmp_path / "test_resnet.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), weights)
    fast = [a for a in FAST if a != "--no-pretrained"]
    result = run_cli(
        "train", bci, "-o", tmp_path / "run", "--epochs", "1", "--pretrained-weights", weights, "-q", *fast
    )
    assert result.exit_code == 0, result.stderr
    card = json.loads((tmp_path / "run" / "model_card.json").read_text())
    assert card["recipe"]["train"]["pretrained_weights"] == str(weights)


def _one_line_error(result, code: int, text: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert text in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_inputs_give_one_line_errors(run_cli, bci: Path, tmp_path: Path) -> None:
    out = ["-o", tmp_path / "out", "-q", *FAST]
    _one_line_error(run_cli("train", tmp_path / "missing", *out), 3, "dataset folder not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(run_cli("train", empty, *out), 11, "cannot tell the layout")
    (empty / "readme.txt").write_text("not a dataset")
    _one_line_error(run_cli("train", empty, *out), 11, "--layout")
    _one_line_error(run_cli("train", bci, "--layout", "zip", *out), 2, "zip")
    odd = tmp_path / "folders" / "5+"
    odd.mkdir(parents=True)
    (odd / "a.png").write_bytes((bci / "IHC" / "train" / "00000_train_0.png").read_bytes())
    _one_line_error(run_cli("train", odd.parent, *out), 11, "'5+'")
    _one_line_error(run_cli("train", bci, *out, "--layout", "tiles"), 11, "tiles.csv")
    _one_line_error(run_cli("train", bci, *out, "--pretrained-weights", tmp_path / "none.pth"), 2, "contradict")
    fast = [a for a in FAST if a != "--no-pretrained"]
    _one_line_error(
        run_cli("train", bci, "-o", tmp_path / "o2", "--pretrained-weights", tmp_path / "none.pth", *fast),
        3,
        "pretrained weight file not found",
    )
    _one_line_error(run_cli("train", bci), 2, "-o OUT")
    _one_line_error(run_cli("train", "--resume", tmp_path / "nothing"), 3, "no training state")
