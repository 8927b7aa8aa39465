"""Training augmentation on uint8 RGB images: flips, shifts and stain (HED) jitter.

It runs on each image before :func:`wsi_her2.models.preprocess.to_input`, so the normalisation
stays the one every other stage uses. Randomness comes from a generator per image seeded by
(seed, epoch, index): the same run gives the same augmented images whatever the number of
loader workers, and a resumed run continues exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Ruifrok & Johnston's hematoxylin, eosin and DAB optical-density vectors (rows, RGB), as in
# scikit-image's ``rgb_from_hed``; its inverse maps optical density to stain amounts.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float32)
RGB_FROM_HED /= np.linalg.norm(RGB_FROM_HED, axis=1, keepdims=True)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED).astype(np.float32)


@dataclass(frozen=True)
class Augmentation:
    """Which augmentations to apply (see :class:`wsi_her2.training.config.TrainConfig`)."""

    hflip: bool = True
    vflip: bool = True
    shift_fraction: float = 0.1
    hed_jitter: float = 0.0

    @property
    def active(self) -> bool:
        """Whether anything changes the images."""
        return self.hflip or self.vflip or self.shift_fraction > 0 or self.hed_jitter > 0


def hed_jitter(rgb: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Scale and offset each stain's optical density (Tellez et al. 2018, "HED light").

    Each of hematoxylin, eosin and DAB is multiplied by U(1 - amount, 1 + amount) and shifted by
    U(-amount, amount) / 4 optical-density units; glass stays nearly white because a stain that is
    absent stays (nearly) absent.
    """
    od = -np.log10(np.maximum(rgb.astype(np.float32), 1.0) / 255.0)
    stains = od.reshape(-1, 3) @ HED_FROM_RGB
    scale = rng.uniform(1.0 - amount, 1.0 + amount, 3).astype(np.float32)
    offset = rng.uniform(-amount, amount, 3).astype(np.float32) / 4.0
    stains = stains * scale + offset * (stains > 0.02)
    out = 255.0 * np.power(10.0, -(stains @ RGB_FROM_HED))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8).reshape(rgb.shape)


def shift(rgb: np.ndarray, dx_px: int, dy_px: int) -> np.ndarray:
    """Translate an image, filling the uncovered edge with the nearest pixels."""
    if dx_px == 0 and dy_px == 0:
        return rgb
    matrix = np.array([[1, 0, dx_px], [0, 1, dy_px]], np.float32)
    h, w = rgb.shape[:2]
    return cv2.warpAffine(rgb, matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)


def augment(rgb: np.ndarray, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """One random augmentation of an (H, W, 3) uint8 image."""
    out = rgb
    if aug.hed_jitter > 0:
        out = hed_jitter(out, aug.hed_jitter, rng)
    if aug.hflip and rng.random() < 0.5:
        out = out[:, ::-1]
    if aug.vflip and rng.random() < 0.5:
        out = out[::-1]
    if aug.shift_fraction > 0:
        h, w = out.shape[:2]
        dx = round(rng.uniform(-aug.shift_fraction, aug.shift_fraction) * w)
        dy = round(rng.uniform(-aug.shift_fraction, aug.shift_fraction) * h)
        out = shift(np.ascontiguousarray(out), dx, dy)
    return np.ascontiguousarray(out)
