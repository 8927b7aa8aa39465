"""Checkpoints that are safe to load: safetensors weights plus a JSON model card.

A checkpoint is a folder holding ``model.safetensors`` and ``model_card.json``. Loading never
unpickles anything, so a checkpoint from a stranger cannot run code. The card carries everything
needed to use the weights the way they were trained: architecture, classes, stain, input size,
mean/std, the tile geometry and µm/px of the training tiles, plus the data description, recipe
and metrics. The card records the SHA-256 of the weight file, and loading checks it.

This module is torch-free; :mod:`wsi_her2.models.loading` builds the network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from wsi_her2._version import __version__
from wsi_her2.errors import InputNotFoundError, ModelError

# The kind of scorer a checkpoint makes (``identity()["kind"]`` in reports).
TRAINED_KIND = "deep"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model_card.json"
CARD_FORMAT = "wsi-her2-model-card"
CARD_VERSION = 1
STAINS = ("ihc", "he")
# ImageNet statistics: the normalisation every ImageNet-pretrained timm model of the paper expects.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """What a checkpoint is and how to feed it.

    Attributes:
        architecture: registered architecture name (see :mod:`wsi_her2.models.registry`).
        classes: class names in output order, e.g. ("0", "1+", "2+", "3+").
        stain: "ihc" or "he": the slides the model was trained on.
        input_size_px: side of the network input (224 in the paper).
        mean: per-channel mean (RGB, 0-1 scale) subtracted before the network.
        std: per-channel standard deviation (RGB, 0-1 scale).
        tile_size_px: side of a training tile in pixels at ``tile_mpp`` (BCI: 1024).
        tile_mpp: µm/px of the training tiles; None when unknown (tiles are then cut in level-0 px).
        label_granularity: "slide" when tile labels are the slide's score (BCI), "tile" when each
            tile was labelled on its own; decides the default slide-level rule.
        head_hidden: widths of the head's hidden layers.
        head_dropout: dropout of the head.
        name: a human name for the model.
        training_data: description of the training data (dataset, split, counts, licence).
        recipe: the resolved training configuration.
        metrics: validation/test metrics.
        weights_sha256: SHA-256 of the weight file.
        wsi_her2_version: the version that wrote the checkpoint.
        created: ISO 8601 time of writing.
        notes: free text (limits, intended use).
    """

    architecture: str
    classes: tuple[str, ...]
    stain: str
    input_size_px: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    tile_size_px: int = 1024
    tile_mpp: float | None = None
    label_granularity: str = "slide"
    head_hidden: tuple[int, ...] = (512, 256)
    head_dropout: float = 0.5
    name: str = ""
    training_data: dict[str, Any] = dataclasses.field(default_factory=dict)
    recipe: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    weights_sha256: str = ""
    wsi_her2_version: str = __version__
    created: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        problems = _card_problems(self)
        if problems:
            raise ModelError("invalid model card: " + "; ".join(problems))

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.classes)

    @property
    def tile_size_um(self) -> float | None:
        """Side of a training tile in µm, when known."""
        return None if self.tile_mpp is None else self.tile_size_px * self.tile_mpp

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready card with its format tag."""
        data = dataclasses.asdict(self)
        for key in ("classes", "mean", "std", "head_hidden"):
            data[key] = list(data[key])
        return {"format": CARD_FORMAT, "format_version": CARD_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Parse a card; unknown keys from newer versions are ignored, missing required ones are errors."""
        if data.get("format") != CARD_FORMAT:
            raise ModelError("not a wsi-her2 model card (missing 'format': 'wsi-her2-model-card')")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        missing = [k for k in ("architecture", "classes", "stain") if k not in values]
        if missing:
            raise ModelError(f"model card lacks {', '.join(missing)}")
        for key in ("classes", "mean", "std", "head_hidden"):
            if key in values:
                if not isinstance(values[key], (list, tuple)):
                    raise ModelError(f"invalid model card: {key} must be a list, got {values[key]!r:.60}")
                values[key] = tuple(values[key])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ModelError(f"invalid model card: {exc}") from exc

    def identity(self) -> dict[str, Any]:
        """The short identity recorded in every report: name, architecture, classes, stain, hash."""
        return {
            "name": self.name,
            "architecture": self.architecture,
            "classes": list(self.classes),
            "stain": self.stain,
            "weights_sha256": self.weights_sha256,
            "wsi_her2_version": self.wsi_her2_version,
        }

    def scorer_identity(self) -> dict[str, Any]:
        """The identity of a scorer built from this card, as reports record it (the kind first)."""
        return {"kind": TRAINED_KIND, **self.identity()}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _card_problems(card: ModelCard) -> list[str]:
    """Everything wrong with a card's values (types included: a card is a file from anywhere).

    The sizes are bounded because they decide allocations before any weight is compared: a head
    of 10^9 units or a 10^6-px input would take the machine's memory, not fail.
    """
    problems = []
    if not isinstance(card.architecture, str) or not card.architecture:
        problems.append("architecture must be a name")
    classes = card.classes
    if not all(isinstance(c, str) and c for c in classes):
        problems.append("classes must be a list of names")
    elif len(classes) < 2 or len(classes) > 16:
        problems.append("at least two classes are needed (and at most 16)")
    elif len(set(classes)) != len(classes):
        problems.append(f"class names must be distinct, got {list(classes)}")
    if card.stain not in STAINS:
        problems.append(f"stain must be one of {STAINS}, not {card.stain!r}")
    if len(card.mean) != 3 or len(card.std) != 3 or not all(_is_number(v) for v in (*card.mean, *card.std)):
        problems.append("mean and std need three finite numbers each")
    elif min(card.std) <= 0:
        problems.append("std must be positive")
    if not _is_int(card.input_size_px, 16, 2048):
        problems.append(f"input_size_px must be a whole number of 16-2048, got {card.input_size_px!r:.40}")
    if not _is_int(card.tile_size_px, 16, 16384):
        problems.append(f"tile_size_px must be a whole number of 16-16384, got {card.tile_size_px!r:.40}")
    if card.tile_mpp is not None and not (_is_number(card.tile_mpp) and card.tile_mpp > 0):
        problems.append(f"tile_mpp must be a positive number, got {card.tile_mpp!r:.40}")
    if card.label_granularity not in ("slide", "tile"):
        problems.append("label_granularity must be 'slide' or 'tile'")
    if not (1 <= len(card.head_hidden) <= 8 and all(_is_int(w, 1, 65536) for w in card.head_hidden)):
        problems.append(f"head_hidden must be 1-8 layer widths of 1-65536, got {list(card.head_hidden)!r:.60}")
    if not (_is_number(card.head_dropout) and 0 <= card.head_dropout < 1):
        problems.append(f"head_dropout must be in [0, 1), got {card.head_dropout!r:.40}")
    for name in ("name", "weights_sha256", "wsi_her2_version", "created", "notes"):
        if not isinstance(getattr(card, name), str):
            problems.append(f"{name} must be text")
    for name in ("training_data", "recipe", "metrics"):
        if not isinstance(getattr(card, name), dict):
            problems.append(f"{name} must be a mapping")
    return problems


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """The weight file and card file of a checkpoint given as its folder or its weight file.

    Raises:
        InputNotFoundError: the path does not exist.
        ModelError: the weight file or the card is missing, or the weights are not safetensors.
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(
            f"checkpoint not found: {path}", hint="give the checkpoint folder or its .safetensors file"
        )
    if path.is_dir():
        weights, card = path / WEIGHTS_FILE, path / CARD_FILE
    else:
        weights = path
        card = path.with_name(CARD_FILE)
        if not card.exists():
            card = path.with_suffix(".json")
    if weights.suffix in (".pt", ".pth", ".ckpt", ".bin", ".pkl"):
        raise ModelError(
            f"{weights.name} is a pickle-based checkpoint, which wsi-her2 never loads (it could run code)",
            hint="use a checkpoint written by `wsi-her2 train` (model.safetensors + model_card.json)",
        )
    if not weights.is_file():
        raise ModelError(
            f"no weight file {weights.name} in {weights.parent}",
            hint="give a folder written by `wsi-her2 train`",
        )
    if not card.is_file():
        raise ModelError(f"no model card beside {weights}", hint=f"the checkpoint folder must hold {CARD_FILE}")
    return weights, card


def read_card(path: str | Path, *, verify_hash: bool = True) -> tuple[ModelCard, Path]:
    """Read a checkpoint's card and check that it belongs to its weight file.

    Args:
        path: the checkpoint folder or its weight file.
        verify_hash: compare the weight file's SHA-256 with the card's.

    Returns:
        (card, weight file path).

    Raises:
        ModelError: unreadable card, or weights that are not the ones the card describes.
    """
    weights, card_path = resolve_checkpoint(path)
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"model card {card_path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"model card {card_path} is not a JSON object")
    card = ModelCard.from_dict(data)
    if verify_hash and card.weights_sha256:
        actual = file_sha256(weights)
        if actual != card.weights_sha256:
            raise ModelError(
                f"{weights.name} does not match its model card "
                f"(SHA-256 {actual[:12]}... vs {card.weights_sha256[:12]}...)",
                hint="the weights were replaced or damaged; use the folder written by `wsi-her2 train`",
            )
    return card, weights


def checkpoint_fingerprint(path: str | Path) -> str:
    """What a checkpoint is, cheaply and without torch: SHA-256 of its card and its weights' hash.

    Raises:
        ModelError, InputNotFoundError: the checkpoint is missing, unreadable or does not match its card.
    """
    card, weights = read_card(path)  # checks the weights against the card's hash
    _, card_path = resolve_checkpoint(path)
    digest = hashlib.sha256(card_path.read_bytes())
    digest.update((card.weights_sha256 or file_sha256(weights)).encode())
    return digest.hexdigest()
