"""A tiny classifier trained in seconds so that class 3+ means "a bright square", and images for it.

The network (``test_resnet``, 128-px input) learns from tissue-coloured noise with one 32-px square:
bright means class 3+, dark means class 0 (1+ and 2+ never occur). Its Grad-CAM for 3+ must then
sit on the bright square, wherever the square is: the tests' ground truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

CLASSES = ("0", "1+", "2+", "3+")
INPUT_PX = 128
SQUARE_PX = 32
TILE_PX = 256  # level-0 tile side of the synthetic slide (resized to the 128-px input)
STEPS = 30  # Adam steps of 16 images: the loss is ~1e-3 after 20


def tissue_noise(rng: np.random.Generator, h: int, w: int, sigma: float = 18.0) -> np.ndarray:
    """Pink H&E-like noise (the stain check reads it as H&E, like the model's card)."""
    base = np.array([205, 140, 180], np.float32) + rng.normal(0, 12, 3)
    return np.clip(base + rng.normal(0, sigma, (h, w, 3)), 0, 255).astype(np.uint8)


def image_with_square(rng: np.random.Generator, size: int, row: int, col: int, square: int, bright: bool = True):
    """Tissue noise of ``size`` px with a bright (or dark) square at (row, col)."""
    image = tissue_noise(rng, size, size)
    image[row : row + square, col : col + square] = 250 if bright else 15
    return image


def _train(card):
    import torch

    from wsi_her2.models.preprocess import to_input
    from wsi_her2.models.registry import create_model

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = create_model("test_resnet", len(CLASSES))
    optimiser = torch.optim.Adam(model.parameters(), 2e-3)
    model.train()
    for _ in range(STEPS):
        labels = rng.integers(0, 2, 16) * 3
        images = np.stack([
            image_with_square(rng, INPUT_PX, *rng.integers(0, INPUT_PX - SQUARE_PX, 2), SQUARE_PX, bool(y == 3))
            for y in labels
        ])  # fmt: skip
        loss = torch.nn.functional.cross_entropy(model(to_input(images, card)), torch.from_numpy(labels))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    return model


@pytest.fixture(scope="session")
def square_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained tiny classifier as a checkpoint folder (H&E card, 256-px level-0 tiles, 128-px input)."""
    from wsi_her2.models.card import ModelCard
    from wsi_her2.models.loading import save_checkpoint

    # Test modules that import this fixture get their own copy of it: train once per session anyway.
    folder = tmp_path_factory.getbasetemp() / "square-checkpoint"
    if (folder / "model_card.json").is_file():
        return folder
    card = ModelCard(architecture="test_resnet", classes=CLASSES, stain="he", input_size_px=INPUT_PX,
                     tile_size_px=TILE_PX, name="bright-square", label_granularity="tile")  # fmt: skip
    return save_checkpoint(_train(card), card, folder)


@pytest.fixture(scope="session")
def square_slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int, bool]]]:
    """A 1024x1024 PNG "slide" of 4x4 tiles of 256 px, each with a 64-px square (bright or dark).

    Returns the path and, per tile, the square's level-0 (x, y) and whether it is bright.
    """
    rng = np.random.default_rng(7)
    image = tissue_noise(rng, 1024, 1024)
    squares = []
    for r in range(4):
        for c in range(4):
            qy, qx = rng.integers(0, 4, 2) * 64  # aligned to the 64-px CAM cells
            bright = bool((r + c) % 2 == 0)
            y, x = r * TILE_PX + int(qy), c * TILE_PX + int(qx)
            image[y : y + 64, x : x + 64] = 250 if bright else 15
            squares.append((x, y, bright))
    path = tmp_path_factory.mktemp("squares") / "squares.png"
    import cv2

    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path, squares
