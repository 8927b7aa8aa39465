"""Preparing a training run: list and split the images, build the model card, check the output folder.

:func:`prepare_training` does everything before the first epoch, so a caller (the command line) can
show the class counts before the long part starts; :func:`wsi_her2.training.fit.run_training`
trains.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from wsi_her2.errors import ConfigError, InputNotFoundError, OutputError
from wsi_her2.models.card import ModelCard
from wsi_her2.models.registry import get_architecture
from wsi_her2.progress import ProgressCallback
from wsi_her2.training.config import DataConfig, TrainConfig
from wsi_her2.training.datasets import BCI_LABEL_NOTE, LabelledImages, load_images
from wsi_her2.training.device import resolve_device
from wsi_her2.training.resume import read_state_info, state_exists
from wsi_her2.training.split import split_train_val

CONFIG_FILE = "train_config.json"
# Settings that define the run: a resumed run must keep them (the split and the network depend on them).
FIXED_DATA = ("layout", "stain", "num_classes", "labels_csv", "val_fraction", "drop_blank", "input_size_px")
FIXED_TRAIN = ("architecture", "head_hidden", "head_dropout", "seed", "optimizer")


@dataclasses.dataclass
class TrainingPlan:
    """What :func:`run_training` needs, prepared and checked.

    Attributes:
        data_root: the dataset folder.
        out_dir: the output folder.
        data: the data settings; ``train``: the recipe.
        images: every training image; ``train_images`` / ``val_images``: the split.
        card: the model card the checkpoint will carry (metrics filled in per best epoch).
        device: where training runs.
        resume: continue from the state in ``out_dir``.
    """

    data_root: Path
    out_dir: Path
    data: DataConfig
    train: TrainConfig
    images: LabelledImages
    train_images: LabelledImages
    val_images: LabelledImages
    card: ModelCard
    device: torch.device
    resume: bool = False


def saved_configs(out_dir: str | Path) -> tuple[Path, DataConfig, TrainConfig]:
    """The data folder and configs of an earlier run in ``out_dir`` (for ``--resume``).

    Raises:
        InputNotFoundError: no run in ``out_dir``.
    """
    read_state_info(out_dir)  # a clear error when there is nothing to resume
    saved = json.loads((Path(out_dir) / CONFIG_FILE).read_text(encoding="utf-8"))
    return (
        Path(saved["run"]["data_root"]),
        DataConfig.from_dict(saved["data"]),
        TrainConfig.from_dict(saved["train"]),
    )


def _check_resume(out_dir: Path, data: DataConfig, train: TrainConfig) -> None:
    _, old_data, old_train = saved_configs(out_dir)
    changed = [k for k in FIXED_DATA if getattr(old_data, k) != getattr(data, k)]
    changed += [k for k in FIXED_TRAIN if getattr(old_train, k) != getattr(train, k)]
    if changed:
        raise ConfigError(
            f"cannot resume with different {', '.join(changed)} (the run in {out_dir} used other values)",
            hint="resume with the original settings, or start a new run in another -o folder",
        )


def _tile_geometry(images: LabelledImages, data: DataConfig) -> int:
    if data.tile_size_px is not None:
        return data.tile_size_px
    if images.layout == "tiles" and images.tile_size_level0_px:
        if data.tile_mpp is not None:
            raise ConfigError(
                "--tile-mpp needs --tile-size for a tile set: tiles.csv gives the tile side in the slide's "
                "level-0 pixels, which may be at another µm/px",
                hint="give --tile-size (pixels at --tile-mpp), or leave out --tile-mpp",
            )
        return images.tile_size_level0_px
    return images.native_size_px or 1024


def prepare_training(
    data_root: str | Path,
    out_dir: str | Path,
    data: DataConfig,
    train: TrainConfig,
    *,
    resume: bool = False,
    progress: ProgressCallback | None = None,
) -> TrainingPlan:
    """List and split the images, build the model card, check the output folder.

    Raises:
        OutputError: ``out_dir`` already holds a run and ``resume`` is False.
        ConfigError: a resumed run's settings differ, or an invalid setting.
        InputNotFoundError, DatasetError, DeviceError: as their names say.
    """
    out = Path(out_dir)
    if resume:
        _check_resume(out, data, train)
    elif state_exists(out):
        raise OutputError(
            f"{out} already holds a training run",
            hint=f"continue it with --resume {out}, or choose another -o folder",
        )
    arch = get_architecture(train.architecture)
    if train.pretrained_weights is not None and not Path(train.pretrained_weights).is_file():
        raise InputNotFoundError(
            f"pretrained weight file not found: {train.pretrained_weights}", hint="check --pretrained-weights"
        )
    device = resolve_device(train.device)
    data = data.replace(input_size_px=data.input_size_px or arch.input_size_px)
    images = load_images(data_root, data, "train", workers=train.workers, progress=progress)
    train_idx, val_idx = split_train_val(images.labels, images.groups, data.val_fraction, train.seed)
    training_data = {
        **images.describe(),
        "train_images": len(train_idx),
        "train_class_counts": images.subset(train_idx).counts(),
        "val_images": len(val_idx),
        "val_class_counts": images.subset(val_idx).counts(),
        "val_split": "by slide" if all(images.groups) and len(set(images.groups)) > 1 else "by image",
    }
    granularity = "slide" if images.layout == "bci" else "tile"
    card = ModelCard(
        architecture=train.architecture,
        classes=images.classes,
        stain=data.stain,
        input_size_px=data.input_size_px or arch.input_size_px,
        tile_size_px=_tile_geometry(images, data),
        tile_mpp=data.tile_mpp,
        label_granularity=granularity,
        head_hidden=train.head_hidden,
        head_dropout=train.head_dropout,
        name=train.name or f"{train.architecture}-{data.stain}-{len(images.classes)}class",
        training_data=training_data,
        recipe={"data": data.to_dict(), "train": train.to_dict()},
        notes=BCI_LABEL_NOTE if granularity == "slide" else "",
    )
    return TrainingPlan(
        Path(data_root),
        out,
        data,
        train,
        images,
        images.subset(train_idx),
        images.subset(val_idx),
        card,
        device,
        resume,
    )
