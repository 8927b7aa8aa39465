"""Training and evaluation settings: the paper's recipe as defaults, every item a config value.

Two frozen dataclasses, one per config-file section:

* ``[data]`` (:class:`DataConfig`): where the images come from and how they are labelled and split,
  shared by ``wsi-her2 train`` and ``wsi-her2 evaluate``;
* ``[train]`` (:class:`TrainConfig`): the network and the optimisation recipe.

The defaults reproduce the paper (ConvNeXt-Tiny, ImageNet weights, all layers trainable, GAP + FC512
+ FC256 head with dropout 0.5, Adam at 1e-4 divided by 10 after 15 epochs, 30 epochs, batch 16,
categorical cross-entropy, flips and shifts as augmentation).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from wsi_her2.config import StageConfig, require, require_fraction, require_positive

LAYOUTS = ("auto", "bci", "tiles", "folders")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclasses.dataclass(frozen=True)
class DataConfig(StageConfig):
    """Which images, which labels, which split.

    Attributes:
        layout: "bci" (``ROOT/{HE,IHC}/{train,test}/NNNNN_{train,test}_{label}.png``), "tiles" (a
            folder written by ``wsi-her2 tile --save-tiles`` with labels in ``tiles.csv`` or
            ``labels_csv``), "folders" (``ROOT/<class>/*.png``), or "auto" to detect it.
        stain: "ihc" or "he": which half of BCI to use; recorded in the model card for every layout.
        num_classes: 4 (0, 1+, 2+, 3+) or 3 (negative = 0/1+, equivocal = 2+, positive = 3+).
        labels_csv: a CSV with columns ``file`` and ``label`` (and optionally ``slide``) that labels
            a tile folder instead of the ``label`` column of its ``tiles.csv``.
        val_fraction: share of the training images held out for validation (stratified by class,
            whole slides at a time when the data names slides); 0 keeps no validation set.
        drop_blank: drop images that the tiler's empty-tile check calls glass.
        min_tissue_fraction: with ``drop_blank``, an image needs at least this fraction of tissue
            pixels (the tile loader's default).
        input_size_px: side of the network input; None = the architecture's (224 for the paper).
        tile_size_px: side of a training image in pixels at ``tile_mpp`` (or in the slides'
            level-0 pixels when ``tile_mpp`` is None), recorded in the card so ``score`` cuts slide
            tiles the same way. None = read from the data: the image side for BCI and class folders
            (1024 for BCI), ``size_level0_px`` of ``tiles.csv`` for tile sets.
        tile_mpp: µm/px of the pixels ``tile_size_px`` counts; None when unknown (BCI's files do not
            say it).
    """

    layout: Literal["auto", "bci", "tiles", "folders"] = "auto"
    stain: Literal["ihc", "he"] = "ihc"
    num_classes: int = 4
    labels_csv: str | None = None
    val_fraction: float = 0.1
    drop_blank: bool = False
    min_tissue_fraction: float = 0.10
    input_size_px: int | None = None
    tile_size_px: int | None = None
    tile_mpp: float | None = None

    def __post_init__(self) -> None:
        self.check_types()
        require(self.layout in LAYOUTS, f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        require(self.stain in ("ihc", "he"), f"stain must be ihc or he, got {self.stain!r}")
        require(self.num_classes in (3, 4), f"classes must be 4 or 3, got {self.num_classes!r}")
        require(
            isinstance(self.val_fraction, (int, float)) and 0.0 <= self.val_fraction < 0.9,
            f"val_fraction must be >= 0 and < 0.9, got {self.val_fraction!r}",
        )
        require_fraction("min_tissue_fraction", self.min_tissue_fraction)
        if self.input_size_px is not None:
            require(
                isinstance(self.input_size_px, int) and 16 <= self.input_size_px <= 2048,
                f"input_size_px must be an integer between 16 and 2048, got {self.input_size_px!r}",
            )
        if self.tile_size_px is not None:
            require(
                isinstance(self.tile_size_px, int) and 16 <= self.tile_size_px <= 16384,
                f"tile_size_px must be an integer between 16 and 16384, got {self.tile_size_px!r}",
            )
        require_positive("tile_mpp", self.tile_mpp, allow_none=True)


@dataclasses.dataclass(frozen=True)
class TrainConfig(StageConfig):
    """The network and the recipe (defaults: the paper's).

    Attributes:
        architecture: registered architecture (convnext_tiny, resnet50, mobilenetv2_100, inception_v3).
        pretrained: start from timm's ImageNet weights (from the cache or the hub; fails fast offline).
        pretrained_weights: a local timm/torchvision ImageNet weight file (works offline); wins
            over ``pretrained``.
        epochs: passes over the training set.
        batch_size: images per optimisation step.
        lr: Adam's learning rate at the start.
        lr_step_epochs: the learning rate is multiplied by ``lr_gamma`` every this many epochs
            (the paper: divided by 10 after 15 of 30 epochs); 0 keeps it constant.
        lr_gamma: the factor of each step.
        optimizer: "adam" (the paper) or "adamw" (decoupled weight decay).
        weight_decay: L2 penalty (Adam) or decoupled decay (AdamW); the paper uses none.
        label_smoothing: cross-entropy label smoothing; the paper uses none.
        class_weighting: "none" (the paper), or "balanced": each class's loss weight is
            n_images / (n_classes * n_class_images), so the rare score 0 (~4% of BCI) counts as much
            as 2+.
        balanced_sampler: draw training images with probability inversely proportional to their
            class size (each epoch still has as many steps as images / batch size).
        hflip: random horizontal flips.
        vflip: random vertical flips.
        shift_fraction: random horizontal and vertical shifts up to this fraction of the side,
            edges filled with the nearest pixels (Keras' default fill); 0 turns shifts off.
        hed_jitter: stain augmentation: each of hematoxylin, eosin and DAB optical density is
            scaled by U(1-x, 1+x) and offset by U(-x, x)/4 (Tellez et al. 2018); 0 = off (the paper).
        head_hidden: widths of the head's hidden layers (the paper: 512, 256).
        head_dropout: dropout after each hidden layer (the paper: 0.5).
        seed: seeds the split, the weight initialisation, the shuffling and the augmentation.
        workers: DataLoader worker processes (0 = read images in the training process).
        cache_images: decode and resize every image once into memory before the first epoch
            (input side² x 3 bytes each: 150 KB at 224 px, ~0.6 GB for BCI's training split), so
            later epochs read no files; decoding 1024-px PNGs is otherwise what limits a GPU.
        device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda" or "mps".
        bf16: bf16 autocast on CUDA (ignored elsewhere).
        channels_last: channels-last memory format on CUDA (ignored elsewhere).
        name: the model's human name in the card; empty = made from architecture, stain and classes.
    """

    architecture: str = "convnext_tiny"
    pretrained: bool = True
    pretrained_weights: str | None = None
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-4
    lr_step_epochs: int = 15
    lr_gamma: float = 0.1
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    class_weighting: Literal["none", "balanced"] = "none"
    balanced_sampler: bool = False
    hflip: bool = True
    vflip: bool = True
    shift_fraction: float = 0.1
    hed_jitter: float = 0.0
    head_hidden: tuple[int, ...] = (512, 256)
    head_dropout: float = 0.5
    seed: int = 0
    workers: int = 2
    cache_images: bool = False
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    bf16: bool = True
    channels_last: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        self.check_types()
        require(isinstance(self.epochs, int) and 1 <= self.epochs <= 10_000, "epochs must be between 1 and 10000")
        require(
            isinstance(self.batch_size, int) and 1 <= self.batch_size <= 4096,
            "batch_size must be between 1 and 4096",
        )
        require_positive("lr", self.lr)
        require(isinstance(self.lr_step_epochs, int) and self.lr_step_epochs >= 0, "lr_step_epochs must be >= 0")
        require(0 < self.lr_gamma <= 1, f"lr_gamma must be in (0, 1], got {self.lr_gamma!r}")
        require(self.optimizer in ("adam", "adamw"), f"optimizer must be adam or adamw, got {self.optimizer!r}")
        require(self.weight_decay >= 0, "weight_decay must be >= 0")
        require(0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)")
        require(
            self.class_weighting in ("none", "balanced"),
            f"class_weighting must be none or balanced, got {self.class_weighting!r}",
        )
        require(0 <= self.shift_fraction <= 0.5, "shift_fraction must be within 0..0.5")
        require(0 <= self.hed_jitter <= 0.5, "hed_jitter must be within 0..0.5")
        # The head's first layer has backbone features x width weights: a width of 10^9 is a bomb.
        require(
            1 <= len(self.head_hidden) <= 8 and all(isinstance(w, int) and 0 < w <= 65536 for w in self.head_hidden),
            "head_hidden must be 1-8 layer widths of 1-65536",
        )
        require(0 <= self.head_dropout < 1, "head_dropout must be in [0, 1)")
        require(isinstance(self.seed, int) and self.seed >= 0, "seed must be a non-negative integer")
        require(isinstance(self.workers, int) and 0 <= self.workers <= 64, "workers must be within 0..64")
        require(self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
